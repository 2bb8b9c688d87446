"""hatelens: is our LLM hate-speech classifier good and fair, and did fine-tuning make it better?"""

__version__ = "0.1.0"
