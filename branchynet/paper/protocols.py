"""The paper's experiments, one registry: every per-network fact lives here.

A :class:`Protocol` holds what the reference experiment of one network
fixes — the network, the dataset, the batch size, the epochs of both
training phases, the threshold list of the sweep — and the paper's own
Table I figures for it. The run scripts, the Fig. 5 runner, the benchmark
and the combined Table I all read :data:`PROTOCOLS` (or :func:`get`).

Facts from docs/reference.md (the reference code and the paper):

- B-LeNet and B-AlexNet: 50 main-network epochs, 100 joint epochs, batch 512.
- B-ResNet-110: 100 main-network epochs, 100 joint epochs, batch 64.
- Sweep lists: the 17-value "LeNet list" (also swept by the ResNet
  experiment) and the 11-value AlexNet list.
"""
import dataclasses
import functools
import typing

from networks import alex_cifar10, lenet_mnist, resnet_cifar10

# CIFAR-10's default preprocessing: the reference's second loader
# ("cifar10gcn"), chosen on validation among the reference's loaders
# (figures/diagnostics/preprocessing/; docs/deviations.md)
CIFAR10_PREPROCESSING = 'gcn'
# the official splits' sizes
DATASET_SIZES = {'mnist': {'train': 60000, 'test': 10000},
                 'cifar10': {'train': 50000, 'test': 10000}}
LENET_THRESHOLDS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075,
                    0.1, 0.25, 0.5, 0.75, 1, 2, 3, 5, 10)
ALEXNET_THRESHOLDS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 0.75, 1, 5,
                      10)


@dataclasses.dataclass(frozen=True)
class PaperResult:
    """One network's rows of the paper's Table I (batch size 1).

    Attributes:
        baseline_accuracy, accuracy: test accuracy (%) of the main network
            and of the B-network at ``thresholds``.
        baseline_ms, ms: ms per sample, ``{'cpu': ..., 'gpu': ...}``.
        gains: the speed-up as the paper prints it (its rounding of
            ``baseline_ms / ms``), ``{'cpu': ..., 'gpu': ...}``.
        thresholds: the entropy threshold of each non-final exit.
        exit_percent: share of test samples leaving at each exit (%).
    """
    baseline_accuracy: float
    accuracy: float
    baseline_ms: typing.Mapping
    ms: typing.Mapping
    gains: typing.Mapping
    thresholds: tuple
    exit_percent: tuple

    @property
    def exit_shares(self):
        """``exit_percent`` as fractions that sum to 1."""
        total = sum(self.exit_percent)
        return tuple(p / total for p in self.exit_percent)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The reference experiment of one network.

    Attributes:
        key: registry key and default output folder, e.g. ``'b_alexnet'``.
        network: factory returning a fresh :class:`branchynet.BranchyNet`.
        dataset: ``'mnist'`` or ``'cifar10'``.
        baseline_name: Table I name of the main network, e.g. ``'AlexNet'``.
        threshold_list: values combined over the non-final exits in the sweep.
        title, input_shape, num_exits: the network's, known without
            building it (a test checks them against the built network).
        batchsize: training batch size.
        epoch_main, epoch_joint: epochs of the two training phases.
        preprocessing: the default preprocessing of the dataset's images
            (:data:`branchynet.data.PREPROCESSINGS` for CIFAR-10; MNIST's
            pixels / 255 is ``'scale'``).
        paper: the paper's Table I figures, or ``None`` (Fig. 5 variants).
    """
    key: str
    network: typing.Callable
    dataset: str
    baseline_name: str
    threshold_list: tuple
    title: str
    input_shape: tuple
    num_exits: int
    batchsize: int = 512
    epoch_main: int = 50
    epoch_joint: int = 100
    preprocessing: str = 'scale'
    paper: typing.Optional[PaperResult] = None


PROTOCOLS = {
    'b_lenet': Protocol(
        key='b_lenet', network=lenet_mnist.get_network, dataset='mnist',
        baseline_name='LeNet', threshold_list=LENET_THRESHOLDS,
        title='B-LeNet', input_shape=(1, 28, 28), num_exits=2,
        paper=PaperResult(99.20, 99.25, {'cpu': 3.37, 'gpu': 1.58},
                          {'cpu': 0.62, 'gpu': 0.34}, {'cpu': 5.4, 'gpu': 4.7},
                          (0.025,),
                          (94.3, 5.63))),
    'b_alexnet': Protocol(
        key='b_alexnet', network=alex_cifar10.get_network, dataset='cifar10',
        baseline_name='AlexNet', threshold_list=ALEXNET_THRESHOLDS,
        title='B-AlexNet', input_shape=(3, 32, 32), num_exits=3,
        preprocessing=CIFAR10_PREPROCESSING, paper=PaperResult(78.38, 79.19, {'cpu': 9.56, 'gpu': 3.15},
                          {'cpu': 6.32, 'gpu': 1.30}, {'cpu': 1.5, 'gpu': 2.4},
                          (0.0001, 0.05),
                          (65.6, 25.2, 9.2))),
    'b_resnet110': Protocol(
        key='b_resnet110', network=resnet_cifar10.get_network,
        dataset='cifar10', baseline_name='ResNet-110',
        threshold_list=LENET_THRESHOLDS, title='B-ResNet-110',
        input_shape=(3, 32, 32), num_exits=3, batchsize=64, epoch_main=100,
        preprocessing=CIFAR10_PREPROCESSING, paper=PaperResult(80.70, 79.17, {'cpu': 137.20, 'gpu': 70.9},
                          {'cpu': 73.5, 'gpu': 37.2}, {'cpu': 1.9, 'gpu': 1.9},
                          (0.3, 0.2),
                          (41.5, 13.8, 44.7))),
}

FIG5_CONVS = tuple(range(alex_cifar10.MAX_BRANCH1_CONVS + 1))


def fig5_variant(convs):
    """The Fig. 5 protocol: B-AlexNet's protocol, exit 1 with ``convs`` convs.

    Raises:
        ValueError: ``convs`` is not one of :data:`FIG5_CONVS`.
    """
    if convs not in FIG5_CONVS or isinstance(convs, bool):
        raise ValueError('Fig. 5 variants have {} conv layers in exit 1, got '
                         '{!r}'.format(FIG5_CONVS, convs))
    return dataclasses.replace(
        PROTOCOLS['b_alexnet'], key='b_alexnet_exit1_{}conv'.format(convs),
        network=functools.partial(alex_cifar10.get_network,
                                  branch1_convs=convs),
        title='B-AlexNet-exit1-{}conv'.format(convs), num_exits=2, paper=None)


def get(key):
    """The protocol registered as ``key``, a Fig. 5 variant key included.

    Raises:
        KeyError: no such protocol (the message lists the known keys).
    """
    if key in PROTOCOLS:
        return PROTOCOLS[key]
    for convs in FIG5_CONVS:
        if key == 'b_alexnet_exit1_{}conv'.format(convs):
            return fig5_variant(convs)
    raise KeyError('no protocol {!r}; known: {} and b_alexnet_exit1_<k>conv '
                   'for k in {}'.format(key, ', '.join(PROTOCOLS), FIG5_CONVS))
