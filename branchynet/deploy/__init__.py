"""Deployment and ports: one ONNX model with the exit decision inside, its
checks against Chainer and its report, the runtimes that run it, the port
kit and the PyTorch port's comparison.

The exported model's API is re-exported here (``branchynet.deploy.export``,
``EarlyExitSession``): ``from branchynet import deploy`` works as it did
when this was one module.
"""
from branchynet.deploy.onnx_export import (EXIT, FORMS, IMAGES,  # noqa
                                           LABEL, THRESHOLDS,
                                           EarlyExitSession, export,
                                           export_main_path,
                                           threshold_feed)
