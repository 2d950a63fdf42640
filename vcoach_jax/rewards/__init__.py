"""The seven VisionCoach rewards (work in progress)."""
