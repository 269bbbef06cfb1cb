"""Hand-written reference models (no torchvision)."""
