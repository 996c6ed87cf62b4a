"""MNIST and the book's published DeepConvNet weights, installed with the package as
``deepnet._data`` so that every command finds them offline from any directory."""
