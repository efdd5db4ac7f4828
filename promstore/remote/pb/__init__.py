"""Generated protobuf modules (reference encoders/decoders); see proto/generate.py."""
