"""What a venue is: the protocols a venue plugin implements, its spec and capabilities."""
