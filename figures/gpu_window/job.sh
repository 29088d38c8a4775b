#!/usr/bin/env bash
# Background GPU job (started with setsid in the first call): B-LeNet GPU timing of the
# committed models while CIFAR-10 arrives, then B-AlexNet's full protocol (gcn default).
export PYTHONPATH=/tmp/site:/tmp/code PYTHONUNBUFFERED=1
cd /tmp/code
nvidia-smi > /tmp/r/nvidia-smi.txt 2>&1
python3 -c "import cupy, chainer, numpy; print('cupy', cupy.__version__, 'chainer', chainer.__version__, 'numpy', numpy.__version__); chainer.print_runtime_info()" > /tmp/r/versions.txt 2>&1
date +%s > /tmp/r/lenet.start
timeout 200 python3 experiments/run_b_lenet.py --models figures/b_lenet -d 0 --data-dir /tmp/data \
  -o /tmp/r/b_lenet_gpu --no-progress --no-cpu-timing > /tmp/r/lenet.log 2>&1
echo $? > /tmp/r/lenet.rc
while [ ! -f /tmp/data/.cifar-ready ]; do sleep 1; done
date +%s > /tmp/r/alexnet.start
python3 experiments/run_b_alexnet.py --data-dir /tmp/data -d 0 --test-batch data_batch_5 \
  --thresholds 0.0001 0.05 -o /tmp/r/b_alexnet --no-progress --no-cpu-timing > /tmp/r/alexnet.log 2>&1
echo $? > /tmp/r/alexnet.rc
date +%s > /tmp/r/alexnet.end
