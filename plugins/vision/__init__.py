"""Image classification: scikit-learn's digits (offline, the default), MNIST (IDX files) and
CIFAR-10 (binary version) from a local folder; a patch-embedding encoder, a classification head,
a ViT teacher and a pixel logistic-regression baseline. Never downloads, never unpickles."""
