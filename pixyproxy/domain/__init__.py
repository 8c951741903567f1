"""The domain: image models and the exception tree. Imports nothing else of pixyproxy."""
