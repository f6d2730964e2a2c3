"""The study stages: study files (spec), run state, the resumable runner and the results store."""
