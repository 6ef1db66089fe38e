"""Stream events of conversations, delivered to subscribers on any node."""
