"""Files a user hands over are untrusted; a crash at any instant leaves a run
that continues. One test per class of the fault hunt on 97ad35f (issue 33),
each with a variant of its own (another file, member or path)."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy
import pytest
from helpers import (copy_of, one_line, run_main, script, script_module,
                     synthetic_data_dir)

from branchynet.data import datasets
from branchynet.data.synthetic import write_cifar10
from branchynet.runs import cli, elastic_study, preprocessing_study, relay
from branchynet.utils import files, ownership
from branchynet.utils.errors import FileProblem, OwnershipError, UserError
from branchynet.utils.ownership import OutputFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'experiments')
QUICK = ['--smoke', '--no-progress', '--unofficial-data', '-b', '64',
         '--train-size', '128', '--test-size', '32', '--timing-samples', '4',
         '--timing-repeats', '1', '--timing-warmup', '0']




@pytest.fixture(scope='module')
def relay_data(tmp_path_factory):
    """The data the committed test relay was trained on."""
    return synthetic_data_dir(tmp_path_factory, mnist=(256, 64))


@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    """A finished quick B-LeNet run, timed, with tables and figures."""
    out = str(tmp_path_factory.mktemp('finished') / 'run')
    cli.main('b_lenet', ['--data-dir', data, '-o', out] + QUICK)
    return out


def stop_message(run, *args, **kwargs):
    """The one-line message a script's ``main`` ends with."""
    with pytest.raises(SystemExit) as stop:
        run(*args, **kwargs)
    return str(stop.value.code)


class Payload:
    """A pickle that, when loaded, creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def record_of(folder):
    with open(os.path.join(folder, ownership.RECORD)) as f:
        return json.load(f)


def write_record(folder, record):
    with open(os.path.join(folder, ownership.RECORD), 'w') as f:
        json.dump(record, f)


# --- 1. nothing outside the folder is deleted ------------------------------------

@pytest.mark.parametrize('where, name', [
    ('figures', '../../victim.txt'),     # the case: a sub-record
    ('', '../victim.txt'),               # the top record
    ('', '/ABSOLUTE'),                   # an absolute path
])
def test_a_record_naming_a_path_outside_its_folder_is_refused(
        finished, tmp_path, data, where, name):
    run = copy_of(finished, tmp_path, 'run')
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    name = name.replace('/ABSOLUTE', str(victim))
    folder = os.path.join(run, where)
    record = record_of(folder)
    record['files'][name] = files.sha256(str(victim))
    write_record(folder, record)
    for argv in (['--models', run, '-o', run], ['--resume', '-o', run]):
        message = stop_message(cli.main, 'b_lenet', ['--data-dir', data] +
                               argv)
        assert 'not a path inside its folder' in message, message
        assert victim.read_text() == 'precious'


def test_a_record_name_is_confined_in_every_call():
    for name in ('../x', 'a/../../x', '/etc/passwd', '', '.', 'a//b',
                 'a/./b', 'a\\..\\b'):
        assert not ownership.inside_name(name), name
    assert ownership.inside_name('figures/fig3_b_lenet_cpu.png')


def test_a_link_inside_the_folder_is_neither_written_nor_followed(
        finished, tmp_path, data):
    """figures/ as a link: the resumed evaluation stops before writing, and
    the link's target is untouched (variant: a linked results file)."""
    run = copy_of(finished, tmp_path, 'run')
    elsewhere = tmp_path / 'elsewhere'
    shutil.move(os.path.join(run, 'figures'), str(elsewhere))
    os.symlink(str(elsewhere), os.path.join(run, 'figures'))
    before = sorted(os.listdir(str(elsewhere)))
    message = stop_message(cli.main, 'b_lenet', ['--data-dir', data,
                                                 '--models', run, '-o', run])
    assert 'is a link' in message, message
    assert sorted(os.listdir(str(elsewhere))) == before
    # a results file replaced by a link to a user's file
    run2 = copy_of(finished, tmp_path, 'run2')
    mine = tmp_path / 'mine.json'
    mine.write_text('{"mine": 1}')
    os.remove(os.path.join(run2, 'table1.md'))
    os.symlink(str(mine), os.path.join(run2, 'table1.md'))
    message = stop_message(cli.main, 'b_lenet', ['--data-dir', data,
                                                 '--models', run2, '-o', run2])
    assert 'is a link' in message and mine.read_text() == '{"mine": 1}'


def test_a_folder_never_adopts_or_removes_through_a_link(tmp_path):
    target = tmp_path / 'target'
    target.mkdir()
    (target / 'keep.txt').write_text('keep')
    folder = OutputFolder.open(str(tmp_path / 'out'), 'files')
    os.symlink(str(target), folder.file('sub'))
    with pytest.raises(OwnershipError, match='is a link'):
        folder.write_text('sub/keep.txt', 'replaced')
    with pytest.raises(OwnershipError, match='is a link'):
        folder.make_folder('sub')
    folder.record['files']['sub/keep.txt'] = files.sha256(
        str(target / 'keep.txt'))
    with pytest.raises(OwnershipError, match='is a link'):
        folder.remove(['sub/keep.txt'])
    folder.close()
    assert (target / 'keep.txt').read_text() == 'keep'


# --- 2. no code runs from a file -----------------------------------------------------

def pickled_member(snapshot, member, marker):
    """Rewrite ``snapshot`` with ``member`` replaced by a pickle payload."""
    with numpy.load(snapshot) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays[member] = numpy.array([Payload(marker)], dtype=object)
    with open(snapshot, 'wb') as f:  # its name has no .npz to append
        numpy.savez(f, **arrays)


@pytest.mark.parametrize('member', ['updater/iteration',
                                    'extensions/LogReport/_log'])
def test_a_pickle_in_a_relayed_snapshot_never_runs(tmp_path, data, member):
    relay_dir = copy_of(os.path.join(ROOT, 'tests', 'data',
                                     'relay_b_lenet_2ranks'), tmp_path,
                        'relay')
    marker = str(tmp_path / 'ran')
    snapshot = os.path.join(relay_dir, relay.SNAPSHOT)
    pickled_member(snapshot, member, marker)
    with pytest.raises(FileProblem, match='holds Python objects'):
        relay.restore(relay_dir, str(tmp_path / 'run'))
    assert not os.path.exists(marker)
    assert not os.path.exists(str(tmp_path / 'run'))


def test_a_pickle_in_a_run_folders_snapshot_never_runs(tmp_path,
                                                       relay_data):
    relay_dir = os.path.join(ROOT, 'tests', 'data', 'relay_b_lenet_2ranks')
    run = str(tmp_path / 'run')
    restored = relay.restore(relay_dir, run)
    snapshot = os.path.join(run, 'joint_phase', restored['snapshot_name'])
    marker = str(tmp_path / 'ran')
    pickled_member(snapshot, 'updater/optimizer:main/t', marker)
    message = stop_message(cli.main, 'b_lenet', ['--data-dir', relay_data,
                                                 '--resume', '-o', run])
    assert 'holds Python objects' in message, message
    assert not os.path.exists(marker)


def test_a_snapshot_of_another_shape_is_refused_before_chainer_loads_it(
        tmp_path, relay_data):
    """A parameter of the wrong shape (Chainer would broadcast it in), and
    a missing member (Chainer would raise a KeyError)."""
    relay_dir = os.path.join(ROOT, 'tests', 'data', 'relay_b_lenet_2ranks')
    for change, expected in (
            (lambda a: a.update({'updater/model:main/net/heads/0/l2/b':
                                 numpy.zeros(1, numpy.float32)}),
             'is float32 (1,), the trainer holds float32 (10,)'),
            (lambda a: a.pop('updater/iterator:main/order'), 'is missing')):
        run = str(tmp_path / 'run{}'.format(len(expected)))
        restored = relay.restore(relay_dir, run)
        snapshot = os.path.join(run, 'joint_phase', restored['snapshot_name'])
        with numpy.load(snapshot) as npz:
            arrays = {name: npz[name] for name in npz.files}
        change(arrays)
        with open(snapshot, 'wb') as f:
            numpy.savez(f, **arrays)
        done = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), 'mpiexec'), '-n',
             '2', sys.executable, os.path.join(SCRIPTS, 'run_b_lenet.py'),
             '--resume', '-o', run, '--data-dir', relay_data,
             '--no-progress'],
            capture_output=True, text=True, timeout=300,
            env=dict(os.environ, OPENBLAS_NUM_THREADS='1'))
        assert done.returncode != 0
        assert expected in done.stderr and 'Traceback' not in done.stderr, \
            done.stderr[-2000:]


def test_a_cifar_python_batch_never_runs_code(tmp_path):
    folder = str(tmp_path / 'py')
    write_cifar10(folder, per_batch=10, python=True)
    marker = str(tmp_path / 'ran')
    for name in ('data_batch_1', 'test_batch'):
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump({b'data': Payload(marker), b'labels': [0]}, f)
        # official name: refused by its MD5 before anything is unpickled
        with pytest.raises(datasets.DataError, match='MD5'):
            datasets.load_cifar10(folder, cache_dir=str(tmp_path / 'c'))
        # as unofficial data it is unpickled, but no function may be called
        with pytest.raises(datasets.DataError, match='never holds'):
            datasets.load_cifar10(folder, cache_dir=str(tmp_path / 'c'),
                                  official=False)
        assert not os.path.exists(marker)
        write_cifar10(folder, per_batch=10, python=True)


# --- 3. a crash at any instant leaves a run that continues --------------------------

class _Sketch:
    """Stands for a drawn figure: the crash test needs the files written,
    not matplotlib's minutes of drawing them at every step."""

    def savefig(self, f, **kwargs):
        f.write(b'figure')


def _child(argv, step=None, log=os.devnull):
    """Run ``cli.main('b_lenet', argv)`` in a forked child, figures
    sketched; with ``step``, the child is killed (``os._exit``, no
    clean-up) right after its ``step``-th change to a folder. Returns the
    child's exit status: 137 killed, 0 finished, 3 failed."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    code = 0
    try:  # the child: never returns into pytest
        from branchynet.runs import figures
        stems = figures.figure_stems
        figures.figure_stems = lambda results: {
            stem: _Sketch for stem in stems(results)}
        seen = [0]

        def crash(what):
            seen[0] += 1
            if seen[0] == step:
                os._exit(137)
        files.crash_point = crash
        sys.stdout = sys.stderr = open(log, 'w')
        cli.main('b_lenet', argv)
    except SystemExit as e:
        print(e.code, file=sys.stderr)
        code = 3
    except BaseException as e:
        print(repr(e), file=sys.stderr)
        code = 3
    sys.stderr.flush()
    os._exit(code)


def test_a_crash_after_any_write_leaves_a_run_that_resumes(data, tmp_path):
    """Killed right after each file moved into place, record saved or file
    removed: --resume finishes the run, and every file it recorded is its
    own (the issue's cases: baseline.npz, results.json, table1.md, a
    figure, exit_outputs.npz, run.json)."""
    argv = ['--data-dir', data] + QUICK + ['--train-size', '64',
                                           '--test-size', '16']
    log = str(tmp_path / 'log')
    step = 0
    while True:
        step += 1
        out = str(tmp_path / 'run{}'.format(step))
        code = _child(argv + ['-o', out], step)
        if code == 0:
            break  # the run finished before its step-th write
        assert code == 137, 'the run failed before its crash'
        if not os.path.isdir(out):
            continue  # killed before the folder had anything
        assert _child(argv + ['-o', out, '--resume'], log=log) == 0, \
            'killed after write {}: --resume failed: {}'.format(
                step, open(log).read()[-1500:])
        folder = OutputFolder(out, ownership.read_record(out))
        assert all(folder.owns(n) for n in folder.record['files']), step
        assert folder.record.get('complete') is True, step
        shutil.rmtree(out)
    assert step > 40  # every write of a run was a crash point


def test_a_crash_between_a_files_move_and_its_record_leaves_it_owned(
        tmp_path, monkeypatch):
    """The issue's window, in one folder: the file is in place, the record
    not yet rewritten. Then a second replace after the crash is allowed."""
    folder = OutputFolder.open(str(tmp_path / 'f'), 'files')
    folder.write_text('a.txt', 'one')

    class Killed(BaseException):
        pass

    def kill_after_the_move(what):
        if what.startswith('replaced') and what.endswith('a.txt'):
            raise Killed()
    monkeypatch.setattr(files, 'crash_point', kill_after_the_move)
    with pytest.raises(Killed):
        folder.write_text('a.txt', 'two')
    monkeypatch.undo()
    folder.close()
    again = OutputFolder.open(str(tmp_path / 'f'), 'files')
    assert (tmp_path / 'f' / 'a.txt').read_text() == 'two'
    assert again.owns('a.txt')
    again.write_text('a.txt', 'three')
    assert again.record['files']['a.txt'] == files.sha256(again.file('a.txt'))


def test_a_failed_resume_keeps_the_run_it_was_asked_to_resume(
        data, tmp_path):
    """Killed before its first snapshot, then resumed with a data folder
    that fails: run.json and the folder stay."""
    out = str(tmp_path / 'run')
    argv = ['--data-dir', data] + QUICK + ['-o', out]
    from branchynet.runs import pipeline
    pid = os.fork()
    if pid == 0:  # killed as training starts: no clean-up runs
        pipeline.train = lambda *args, **kwargs: os._exit(137)
        sys.stdout = sys.stderr = open(os.devnull, 'w')
        try:
            cli.main('b_lenet', argv)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137
    before = sorted(os.listdir(out))
    assert 'run.json' in before
    empty = tmp_path / 'empty'
    empty.mkdir()
    stop_message(cli.main, 'b_lenet', ['--data-dir', str(empty), '--resume',
                                       '-o', out] + QUICK)
    assert sorted(os.listdir(out)) == before


# --- 4. every run records what it ran -------------------------------------------------

@pytest.fixture
def elastic_flags(tmp_path):
    write_cifar10(str(tmp_path / 'data'), per_batch=64, test=False)
    return ['--smoke', '--unofficial-data', '--test-batch', 'data_batch_5',
            '--data-dir', str(tmp_path / 'data'), '--cache-dir',
            str(tmp_path / 'cache'), '--backbones', 'resnet', '--resnet-n',
            '1', '--no-progress', '--timing-samples', '0', '--out',
            str(tmp_path / 'study')]


def elastic_main(argv):
    return run_main('run_elastic', argv)


def test_the_elastic_study_keeps_its_settings(elastic_flags, tmp_path):
    first = elastic_main(elastic_flags)
    assert first['config']['seed'] == 0
    # a second run into the finished study: refused, with or without --resume
    assert 'pass --resume' in stop_message(elastic_main,
                                           elastic_flags + ['--seed', '3'])
    message = stop_message(elastic_main,
                           elastic_flags + ['--resume', '--seed', '3'])
    assert "seed 3 (the study has 0)" in message, message
    message = stop_message(elastic_main, elastic_flags + [
        '--resume', '--train-size', '192'])
    assert 'train_size' in message
    # what may change: where and how it is timed
    again = elastic_main(elastic_flags + ['--resume', '--timing-samples', '2'])
    assert again['backbones'][0]['training'] == first['backbones'][0][
        'training']


def test_the_elastic_study_refuses_a_users_folder_and_smoke_keeps_flags(
        elastic_flags, tmp_path):
    users = tmp_path / 'users'
    users.mkdir()
    (users / 'notes.txt').write_text('mine')
    flags = elastic_flags[:-1] + [str(users)]
    for extra in ([], ['--resume']):
        stop_message(elastic_main, flags + extra)
        assert sorted(os.listdir(str(users))) == ['notes.txt']
    study = elastic_main(elastic_flags + ['--epoch-joint', '2'])
    assert study['config']['schedule']['joint'] == 2  # --smoke did not win
    assert len(study['backbones'][0]['training']['joint']) == 2


def test_elastic_settings_are_checked_before_any_work():
    for values, message in (({'test_batch': 'foo'}, 'test-batch'),
                            ({'backbones': ('vgg',)}, 'backbones'),
                            ({'width': 9}, 'width'),
                            ({'train_size': 0}, 'train-size')):
        with pytest.raises(ValueError, match=message):
            elastic_study.StudyConfig(out='o', **values)
    done = script('run_elastic.py', '--test-batch', 'foo')
    assert done.returncode == 2 and 'invalid choice' in done.stderr


def test_make_figures_refuses_two_runs_of_one_network(finished, tmp_path):
    other = copy_of(finished, tmp_path, 'other')
    out = tmp_path / 'figures'
    done = script('make_figures.py', finished, other, '--out', out)
    one_line(done, 'both make', 'separate --out')
    assert not out.exists()


@pytest.mark.parametrize('flags, message', [
    (['--thresholds', 'inf'], '--thresholds must be finite'),
    (['--threshold-list', '0.1', 'inf'], 'finite non-negative'),
    (['--percent-train-keeps', '1e-320'], 'leaves no sample'),
    (['--epoch-main', '100000000000000000000'], '--epoch-main must be'),
])
def test_values_a_run_could_not_keep_are_refused_at_the_start(
        data, tmp_path, flags, message):
    out = tmp_path / 'run'
    done = script('run_b_lenet.py', '--data-dir', data, '-o', out, *flags)
    one_line(done, message)
    assert not out.exists()


def test_every_accepted_value_round_trips_through_run_json(finished):
    from branchynet.runs.config import RunConfig
    with open(os.path.join(finished, 'run.json')) as f:
        stored = json.load(f)
    config = RunConfig.from_dict(stored)
    assert json.loads(files.json_text(config.to_dict())) == {
        k: v for k, v in stored.items() if k in config.to_dict()}


# --- 5. tracebacks become one line before any long work ---------------------------------

def knee_results(finished, tmp_path, change):
    run = copy_of(finished, tmp_path, 'run{}'.format(len(os.listdir(
        str(tmp_path)))))
    path = os.path.join(run, 'results.json')
    with open(path) as f:
        results = json.load(f)
    change(results)
    with open(path, 'w') as f:
        json.dump(results, f)
    return run


@pytest.mark.parametrize('change, message', [
    (lambda r: r['timing']['cpu'].pop('knee'), "missing key 'knee'"),
    (lambda r: r['timing']['cpu']['knee'].update(thresholds=[0.1, 0.2]),
     'not 1 finite'),
    (lambda r: r['timing']['cpu']['knee'].update(thresholds=[-1]),
     'not 1 finite'),
    (lambda r: r['timing']['cpu']['knee'].update(thresholds=[1e999]),
     'not 1 finite'),
    (lambda r: r.update(protocol='b_alexnet'), 'not the b_lenet run'),
])
def test_a_bad_knee_stops_deploy_before_any_work(finished, tmp_path, change,
                                                 message):
    run = knee_results(finished, tmp_path, change)
    out = tmp_path / 'deployed'
    done = script('deploy.py', 'measure', '--run', run, '--networks',
                  'b_lenet', '--at', 'knee', '--out', out)
    one_line(done, message)
    assert not out.exists()


def test_table1_on_a_deployment_without_batch1_timings_is_one_line(tmp_path):
    source = os.path.join(ROOT, 'figures', 'deploy', 'deploy.json')
    with open(source) as f:
        deployment = json.load(f)
    del deployment['networks']['b_lenet']['timing']['batch1_ms'][
        'deployed_main_path']
    folder = tmp_path / 'deploy'
    folder.mkdir()
    (folder / 'deploy.json').write_text(json.dumps(deployment))
    done = script('make_table1.py', folder, '--out', tmp_path / 't')
    one_line(done, 'deployed_main_path')


def test_a_run_json_with_a_wrong_kernel_history_is_one_line(
        finished, tmp_path, data):
    run = copy_of(finished, tmp_path)
    path = os.path.join(run, 'run.json')
    with open(path) as f:
        stored = json.load(f)
    stored['kernels_by_epoch'] = 'fast'
    with open(path, 'w') as f:
        json.dump(stored, f)
    message = stop_message(cli.main, 'b_lenet', ['--data-dir', data,
                                                 '--models', run, '-o', run])
    assert 'kernels_by_epoch' in message, message


def test_a_huge_port_kit_batch_is_refused(tmp_path):
    done = script('export_port_kit.py', '--network', 'b_lenet', '--batch',
                  '100000000', '--out', tmp_path / 'kit')
    one_line(done, 'must be at most 10000')
    assert not (tmp_path / 'kit').exists()


def test_a_deployed_model_session_refuses_what_it_cannot_run(tmp_path):
    from branchynet.deploy import EarlyExitSession
    model = os.path.join(ROOT, 'figures', 'b_lenet', 'b_lenet_early_exit.onnx')
    kit_model = os.path.join(ROOT, 'figures', 'b_lenet', 'port_kit',
                             'model.onnx')
    with pytest.raises(ValueError, match='not a model exported'):
        EarlyExitSession(kit_model)
    with pytest.raises(ValueError, match='not a file'):
        EarlyExitSession(str(tmp_path))
    session = EarlyExitSession(model)
    x = numpy.zeros((1, 1, 28, 28), numpy.float32)
    with pytest.raises(ValueError, match='one value per non-final exit'):
        session.predict(x, 0.5)
    with pytest.raises(ValueError, match='one value per non-final exit'):
        session.predict(x, [0.1, 0.2])
    from branchynet import EntropyThresholds
    with pytest.raises(ValueError, match='has 2 exits'):
        session.predict(x, EntropyThresholds([0.1, 0.2], 3))
    with pytest.raises(ValueError, match='NaN or infinite'):
        session.predict(x + numpy.nan, [0.1])


def test_nan_images_are_refused_by_predict():
    from helpers import make_tiny_net, tiny_batch
    net = make_tiny_net()
    x, _ = tiny_batch(4)
    x[2, 0, 0, 0] = numpy.inf
    with pytest.raises(ValueError, match='NaN or infinite'):
        net.predict(x, thresholds=[0.1, 0.1])


def test_a_port_kit_manifest_naming_other_files_is_refused(tmp_path):
    from branchynet.deploy import port_kit
    kit = copy_of(os.path.join(ROOT, 'figures', 'b_lenet', 'port_kit'),
                  tmp_path, 'kit')
    path = os.path.join(kit, 'manifest.json')
    with open(path) as f:
        manifest = json.load(f)
    secret = tmp_path / 'secret'
    secret.write_text('x')
    manifest['files']['../secret'] = files.sha256(str(secret))
    with open(path, 'w') as f:
        json.dump(manifest, f)
    with pytest.raises(FileProblem, match='a kit holds'):
        port_kit.read(kit)


@pytest.mark.parametrize('name', ['..', '.', '', 'log', '../../x',
                                  'snapshot_epoch_2.0/../../x'])
def test_a_relay_naming_another_file_for_its_snapshot_is_refused(tmp_path,
                                                                  name):
    relay_dir = copy_of(os.path.join(ROOT, 'tests', 'data',
                                     'relay_b_lenet_2ranks'), tmp_path,
                        'relay')
    path = os.path.join(relay_dir, relay.RELAY_FILE)
    with open(path) as f:
        content = json.load(f)
    content['snapshot_name'] = name
    with open(path, 'w') as f:
        json.dump(content, f)
    run = str(tmp_path / 'run')
    with pytest.raises(FileProblem, match='snapshot_name'):
        relay.restore(relay_dir, run)
    assert not os.path.exists(run)


# --- 6. no half-made outputs -------------------------------------------------------------

def test_a_restore_that_fails_leaves_nothing_and_can_be_done_again(tmp_path):
    relay_dir = copy_of(os.path.join(ROOT, 'tests', 'data',
                                     'relay_b_lenet_2ranks'), tmp_path,
                        'relay')
    with open(os.path.join(relay_dir, relay.BASELINE), 'r+b') as f:
        f.truncate(100)
    run = str(tmp_path / 'run')
    with pytest.raises(FileProblem):
        relay.restore(relay_dir, run)
    assert not os.path.exists(run)
    # a failure on the way (the disk): what was written goes again
    shutil.copy(os.path.join(ROOT, 'tests', 'data', 'relay_b_lenet_2ranks',
                             relay.BASELINE), relay_dir)
    real_copy = OutputFolder.copy_in

    def full(self, source, name):
        raise OSError(28, 'No space left on device')
    OutputFolder.copy_in = full
    try:
        with pytest.raises(OSError):
            relay.restore(relay_dir, run)
    finally:
        OutputFolder.copy_in = real_copy
    assert not os.path.exists(run)
    relay.restore(relay_dir, run)
    assert os.path.isfile(os.path.join(run, 'run.json'))


def test_a_relay_save_over_a_users_file_writes_nothing(tmp_path):
    relay_dir = os.path.join(ROOT, 'tests', 'data', 'relay_b_lenet_2ranks')
    run = str(tmp_path / 'run')
    relay.restore(relay_dir, run)
    target = tmp_path / 'target'
    target.mkdir()
    (target / 'PROGRESS.md').write_text('my notes')
    with pytest.raises(OwnershipError):
        relay.save(run, str(target))
    assert sorted(os.listdir(str(target))) == ['PROGRESS.md']


def test_relay_and_export_name_their_run_dir(tmp_path):
    (tmp_path / 'file').write_text('x')
    relay_dir = os.path.join(ROOT, 'tests', 'data', 'relay_b_lenet_2ranks')
    with pytest.raises(UserError, match='RUN_DIR'):
        relay.restore(relay_dir, str(tmp_path / 'file'))


def test_an_export_into_an_older_run_folder_keeps_it_a_run(finished,
                                                           tmp_path, data):
    """A run folder of a version before records: exported into, it still
    resumes and evaluates in place."""
    run = copy_of(finished, tmp_path)
    for folder, _, names in os.walk(run):
        if ownership.RECORD in names:
            os.remove(os.path.join(folder, ownership.RECORD))
    deploy_script = script_module('deploy')
    deploy_script.main(['export', run])
    assert 'run.json' in record_of(run)['files']
    message = stop_message(deploy_script.main, ['export', run])
    assert '--replace' in message
    deploy_script.main(['export', run, '--form', 'portable'])
    deploy_script.main(['export', run, '--replace'])
    cli.main('b_lenet', ['--data-dir', data, '--models', run, '-o', run] +
             QUICK)


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    folder = OutputFolder.open(str(tmp_path / 'f'), 'files')

    def full(*args):
        raise OSError(28, 'No space left on device')
    with pytest.raises(OSError) as error:
        with folder.open_file('results.json', 'w') as f:
            full(f)
    assert error.value.filename == folder.file('results.json')
    assert cli.describe_os_error(error.value).startswith(
        folder.file('results.json'))


def test_the_preprocessing_study_refuses_a_users_folder(tmp_path):
    users = tmp_path / 'users'
    users.mkdir()
    (users / 'notes.txt').write_text('mine')
    config = preprocessing_study.StudyConfig(out=str(users), data_dir='x')
    with pytest.raises(UserError, match='not empty'):
        preprocessing_study.run(config)
    assert sorted(os.listdir(str(users))) == ['notes.txt']


def test_a_gzip_that_inflates_beyond_any_dataset_is_refused(tmp_path,
                                                            monkeypatch):
    import gzip

    from branchynet.data.synthetic import write_mnist
    folder = write_mnist(str(tmp_path / 'mnist'), train=10, test=10)
    monkeypatch.setattr(datasets, 'MAX_DECOMPRESSED', 4000)
    with pytest.raises(datasets.DataError, match='decompresses to more'):
        datasets.load_mnist(folder, official=False)
    with open(os.path.join(folder, 'train-labels-idx1-ubyte.gz'), 'rb') as f:
        assert len(gzip.decompress(f.read())) < 4000  # the labels passed
