"""Swap jobs: uploads, face selection and results (see issue 5)."""
