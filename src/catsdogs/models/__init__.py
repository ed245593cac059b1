"""The PyTorch networks: architectures, their pretrained weights and the graph the bundle exports."""
