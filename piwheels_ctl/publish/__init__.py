"""The static index and its pages: publishing them atomically, and serving them."""
