"""The longitudinal layer: study workspace, one-visit pipeline, cohort batch, change over time."""
