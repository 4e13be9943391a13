"""The ServerApp's side of a round."""
