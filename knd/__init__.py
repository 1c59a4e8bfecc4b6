"""knd: speech emotion recognition trained, tuned and served as batch jobs on Ray.

Importing knd has no side effects: no Ray, no files, no arguments.
"""

__version__ = "0.1.0"
