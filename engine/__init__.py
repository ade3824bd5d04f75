"""SafeFace inference engine: face analysis, generation, swapping and voice masking.

Django-free by design: nothing here imports django or the site's apps (a test checks this), so
workers and benchmarks can use it directly.
"""
