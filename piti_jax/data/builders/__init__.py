"""tfds dataset builders; every one prepares to ArrayRecord and never downloads anything."""
