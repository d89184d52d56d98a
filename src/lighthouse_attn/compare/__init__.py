"""The dense vs Lighthouse experiment: arms, their runs, and the report with the verdict."""
