"""The preprocessing study: validation on data_batch_4 only, resumable,
never training a finished candidate again."""
import json
import os

import pytest

from helpers import Interrupted, interrupt_training
from branchynet.data.synthetic import write_cifar10
from branchynet.loss import BranchyLoss
from branchynet.runs import preprocessing_study
from branchynet.runs.preprocessing_study import StudyConfig
from branchynet.utils.errors import UserError


@pytest.fixture
def study(tmp_path):
    """A study's configuration over synthetic batches 1-4 (no batch 5)."""
    folder = write_cifar10(str(tmp_path / 'cifar'), per_batch=64, test=False)
    os.remove(os.path.join(folder, 'data_batch_5.bin'))
    return StudyConfig(out=str(tmp_path / 'study'), data_dir=folder,
                       candidates=('scale', 'gcn'), epochs=2, batchsize=32,
                       cache_dir=str(tmp_path / 'cache'), official=False,
                       progress=False)


def test_every_candidate_is_validated_on_batch_4_and_the_best_chosen(study):
    summary = preprocessing_study.run(study)
    assert [r['preprocessing'] for r in summary['candidates']] == ['scale',
                                                                 'gcn']
    for row in summary['candidates']:
        assert [e['epoch'] for e in row['log']] == [1, 2]
        assert row['validation_accuracy'] == \
            row['log'][-1]['validation/main/accuracy']
        # the finished candidate keeps its log, not its snapshot
        assert os.listdir(os.path.join(study.out, row['preprocessing'])) == [
            'log']
    best = max(summary['candidates'], key=lambda r: r['validation_accuracy'])
    assert summary['chosen'] == best['preprocessing']
    with open(os.path.join(study.out, 'comparison.json')) as f:
        assert json.load(f)['chosen'] == summary['chosen']
    text = open(os.path.join(study.out, 'comparison.md')).read()
    assert 'validated on data_batch_4' in text and '**{}**'.format(
        summary['chosen']) in text
    assert os.path.isfile(os.path.join(study.out, 'validation_curves.png'))


def test_an_interrupted_study_resumes_without_training_again(study,
                                                             monkeypatch):
    # 6 steps an epoch: the second candidate's (gcn's) epoch 2
    main_loss = interrupt_training(monkeypatch, 2 * 6 + 8, 'main_loss')
    with pytest.raises(Interrupted):
        preprocessing_study.run(study)
    first_log = open(os.path.join(study.out, 'scale', 'log')).read()
    assert len(json.loads(open(os.path.join(study.out, 'gcn', 'log'))
                          .read())) == 1

    with pytest.raises(UserError, match='pass --resume'):
        preprocessing_study.run(study)
    monkeypatch.setattr(BranchyLoss, 'main_loss', main_loss)
    trained = []
    real_train = preprocessing_study.train_candidate

    def counting(config, candidate, *args):
        trained.append(candidate)
        return real_train(config, candidate, *args)
    monkeypatch.setattr(preprocessing_study, 'train_candidate', counting)
    summary = preprocessing_study.run(study, resume=True)
    assert trained == ['gcn']  # scale was finished: not trained again
    assert open(os.path.join(study.out, 'scale', 'log')).read() == first_log
    assert [e['epoch'] for e in summary['candidates'][1]['log']] == [1, 2]


def test_a_resumed_study_must_keep_its_settings(study):
    preprocessing_study.run(study.__class__(**dict(
        study.__dict__, candidates=('scale',), epochs=1)))
    changed = study.__class__(**dict(study.__dict__, candidates=('scale',),
                                     epochs=3))
    with pytest.raises(UserError, match='other settings.*epochs'):
        preprocessing_study.run(changed, resume=True)


def test_resume_needs_a_study(study):
    with pytest.raises(UserError, match='holds no preprocessing study'):
        preprocessing_study.run(study, resume=True)


@pytest.mark.parametrize('values, message', [
    ({'candidates': ('scale', 'scale')}, 'distinct'),
    ({'candidates': ('pca',)}, 'distinct'),
    ({'epochs': 0}, 'at least 1'),
    ({'validation_batch': 'data_batch_1'}, 'among the training'),
])
def test_bad_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(out='o', data_dir='d', **values)
