"""MNIST and CIFAR-10 from their standard files, checked and preprocessed;
small synthetic sets in the same formats."""
from branchynet.data.datasets import (PREPROCESSINGS, DataError,  # noqa
                                      Dataset, load_cifar10, load_mnist)
from branchynet.data.synthetic import (random_batch, write_cifar10,  # noqa
                                       write_mnist)
