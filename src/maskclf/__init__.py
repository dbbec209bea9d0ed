"""maskclf: classify face photos by mask status x gender x age group."""

__version__ = "0.1.0"
