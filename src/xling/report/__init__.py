"""The report stages: seed statistics, the study summary, the claims, figures and documents."""
