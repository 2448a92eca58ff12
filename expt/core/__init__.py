"""Everything that trains, evaluates and schedules. No UI imports here (see tests/test_boundaries.py)."""
