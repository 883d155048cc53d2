"""codistill: distil code generation from a teacher LLM into a student."""
__version__ = "0.1.0"
