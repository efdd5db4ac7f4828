"""Background compaction, retention and downsampling of on-disk blocks.

Builds on ``storage`` only; the service in ``promstore`` schedules it.
"""
