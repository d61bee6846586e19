"""Does nothing: measures what a launcher itself costs (`make bench`)."""
