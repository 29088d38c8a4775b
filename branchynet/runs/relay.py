"""A long run carried across sittings: its latest state packed into a few files.

Training B-AlexNet on a CPU takes longer than one working session, and only
what is committed survives between sessions. :func:`save` packs a run
folder's latest state into a *relay* folder (meant to be committed); :func:`restore`
turns a relay folder back into a run folder that ``--resume`` continues,
with the same number of ranks::

    relay.json        what the relay holds: the run's configuration
                      (run.json), the snapshot's phase and file name, the
                      epochs done, every save so far (a sitting may save
                      more than once: while it runs, and at its stop)
    snapshot.npz      the latest Trainer snapshot: ONE file, replaced by
                      each save (in the joint phase, the joint one: it holds
                      the whole training state)
    main_log.json, joint_log.json    the Trainer logs so far
    baseline.npz      the main network, once the main phase is done
    PROGRESS.md       a short progress report (epochs, latest accuracies)
    progress.png      the training curves so far

``python experiments/relay.py save RUN_DIR figures/b_alexnet`` and
``python experiments/relay.py restore figures/b_alexnet RUN_DIR``.
"""
import datetime
import os

from branchynet.runs import reading
from branchynet.runs.run_folder import (
    MODEL_FILES,
    PHASE_FOLDERS,
    RUN_FILE,
    RunFolder,
)
from branchynet.training import (LOG, PHASES, SNAPSHOT_NAME, check_snapshot,
                                 read_log)
from branchynet.utils import environment, files
from branchynet.utils.errors import FileProblem, UserError
from branchynet.utils.ownership import OutputFolder

KIND = 'branchynet-relay'
FOLDER_KIND = 'relay'
RELAY_FILE = 'relay.json'
SNAPSHOT = 'snapshot.npz'
BASELINE = MODEL_FILES['main']


def _log_name(phase):
    return '{}_log.json'.format(phase)


def progress(run, logs):
    """Epochs done per phase and the latest per-epoch entry, from the logs."""
    done = {phase: len(logs.get(phase) or []) for phase in PHASES}
    planned = {'main': run['epoch_main'], 'joint': run['epoch_joint']}
    latest = next((logs[p][-1] for p in reversed(PHASES) if logs.get(p)),
                  None)
    return {'epochs_done': done, 'epochs_planned': planned, 'latest': latest,
            'epoch_seconds': {p: _epoch_seconds(logs.get(p)) for p in PHASES}}


def _epoch_seconds(log):
    """The mean seconds an epoch of the phase took so far (its test pass
    included; the Trainer's elapsed time, which a resume carries on), or
    ``None`` before its first epoch."""
    elapsed = log[-1].get('elapsed_time') if log else None
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) \
            or not elapsed > 0:
        return None
    return elapsed / len(log)


def finished(relay):
    """Whether the relay's run has trained every planned epoch."""
    done, planned = relay['epochs_done'], relay['epochs_planned']
    return all(done[p] >= planned[p] for p in PHASES)


def _time_left(relay):
    """A sentence on the pace so far and the training left."""
    done, planned = relay['epochs_done'], relay['epochs_planned']
    pace = relay.get('epoch_seconds') or {}
    left = {p: max(planned[p] - done[p], 0) for p in PHASES}
    paces = ', '.join('{} {:.1f} min'.format(p, pace[p] / 60)
                      for p in PHASES if pace.get(p))
    sentence = 'Pace so far (an epoch, its test pass included): {}. '.format(
        paces or 'none measured yet')
    if finished(relay):
        return sentence + 'No epoch is left.'
    untimed = [p for p in PHASES if left[p] and not pace.get(p)]
    epochs = ' and '.join('{} {} epoch(s)'.format(left[p], p)
                          for p in PHASES if left[p])
    if untimed:
        return sentence + 'Left: {} ({} not timed yet).'.format(
            epochs, ' and '.join('the ' + p + ' phase' for p in untimed))
    hours = sum(left[p] * pace[p] for p in PHASES) / 3600
    return sentence + 'Left: {}, about {:.1f} hours at that pace.'.format(
        epochs, hours)


def save(run_dir, relay_dir, note=None):
    """Pack the run in ``run_dir`` into ``relay_dir``; returns relay.json's dict.

    Raises:
        UserError: ``run_dir`` holds no run, or nothing trained yet.
    """
    run = reading.read_run_file(run_dir)
    if run is None:
        raise UserError('{} holds no run (no {})'.format(run_dir, RUN_FILE))
    source = RunFolder(run_dir)
    logs = {phase: source.log(phase) for phase in PHASES}
    phase = 'joint' if source.latest_snapshot('joint') else 'main'
    snapshot = source.latest_snapshot(phase)
    if snapshot is None:
        raise UserError('{}: no training snapshot yet: nothing to relay'
                        .format(run_dir))
    check_snapshot(snapshot)
    baseline = source.model('main')
    if phase == 'joint' and not os.path.isfile(baseline):
        raise FileProblem('{}: the joint phase began but {} is missing'
                          .format(run_dir, BASELINE))
    names = [SNAPSHOT, RELAY_FILE, 'PROGRESS.md', 'progress.png'] + [
        _log_name(p) for p in PHASES if logs[p] is not None] + (
        [BASELINE] if phase == 'joint' else [])
    with OutputFolder.open(relay_dir, FOLDER_KIND, flag='RELAY_DIR',
                           foreign_ok=False) as folder:
        folder.check_replaceable(names)  # before anything is written
        earlier = read(relay_dir) if RELAY_FILE in folder else None
        state = progress(run, logs)
        sittings = list(earlier['sittings']) if earlier else []
        sittings.append({
            'saved_utc': datetime.datetime.utcnow().isoformat(
                timespec='seconds'),
            'git_commit': environment.describe()['git_commit'],
            'epochs_done': state['epochs_done'],
            'note': note})
        folder.copy_in(snapshot, SNAPSHOT)
        for name in PHASES:
            if logs[name] is not None:
                folder.write_json(_log_name(name), logs[name])
        if phase == 'joint':
            folder.copy_in(baseline, BASELINE)
        relay = {'kind': KIND, 'run': run, 'phase': phase,
                 'snapshot_name': os.path.basename(snapshot),
                 'sittings': sittings}
        relay.update(state)
        folder.write_json(RELAY_FILE, relay)
        folder.write_text('PROGRESS.md', progress_text(relay, relay_dir))
        _draw(relay, logs, folder)
    return relay


def read(relay_dir):
    """A relay folder's ``relay.json``, checked."""
    path = os.path.join(relay_dir, RELAY_FILE)
    relay = files.read_json(path)
    reading.check(relay, {
        'kind': reading.Equal(KIND), 'run': {'protocol': str},
        'phase': str, 'snapshot_name': str,
        'sittings': reading.ListOf(dict),
        'epochs_done': {'main': reading.Integer, 'joint': reading.Integer},
        'epochs_planned': {'main': reading.Integer,
                           'joint': reading.Integer}}, path)
    if relay['phase'] not in PHASES or not SNAPSHOT_NAME.fullmatch(
            relay['snapshot_name']):  # what the Trainer writes and resumes
        raise FileProblem('{}: phase or snapshot_name is not what a relay '
                          'holds'.format(path))
    return relay


def restore(relay_dir, run_dir):
    """Make ``run_dir`` (new or empty) the run a relay holds, ready for
    ``--resume`` (with its configuration's ``out`` set to ``run_dir``).

    Everything the relay holds is checked before anything is written (its
    configuration, logs, snapshot and model); a restore that fails on the
    way removes what it wrote, so the next one starts clean.

    Returns:
        relay.json's dict.
    """
    from branchynet.runs.config import RunConfig
    from branchynet.serialization import load_model
    relay = read(relay_dir)
    path = os.path.join(relay_dir, RELAY_FILE)
    try:
        config = RunConfig.from_dict(dict(relay['run'], out=run_dir,
                                          resume=False, models=None))
    except (ValueError, TypeError) as e:
        raise FileProblem('{}: its run is not a configuration this program '
                          'can run ({})'.format(path, e)) from None
    check_snapshot(os.path.join(relay_dir, SNAPSHOT))
    logs = {phase: read_log(os.path.join(relay_dir, _log_name(phase)))
            for phase in PHASES}
    if relay['phase'] == 'joint':
        load_model(os.path.join(relay_dir, BASELINE), config.spec.network())
    run = dict(relay['run'], out=run_dir, resume=False)
    folder = OutputFolder.open(run_dir, 'run', flag='RUN_DIR',
                               foreign_ok=False)
    unrecorded = []  # written for the Trainer, which manages its folders
    try:
        if folder.record['files']:
            raise UserError('{} holds a run already: restore into a new or '
                            'empty folder'.format(run_dir))
        for phase in PHASES:
            if logs[phase] is not None:
                folder.make_folder(PHASE_FOLDERS[phase])
                unrecorded.append(folder.file('{}/{}'.format(
                    PHASE_FOLDERS[phase], LOG)))
                files.write_json(unrecorded[-1], logs[phase])
        folder.make_folder(PHASE_FOLDERS[relay['phase']])
        unrecorded.append(folder.file('{}/{}'.format(
            PHASE_FOLDERS[relay['phase']], relay['snapshot_name'])))
        with open(os.path.join(relay_dir, SNAPSHOT), 'rb') as source, \
                files.atomic_write(unrecorded[-1]) as target:
            target.write(source.read())
        if relay['phase'] == 'joint':
            folder.copy_in(os.path.join(relay_dir, BASELINE), BASELINE)
        folder.write_json(RUN_FILE, run)  # last: a run folder only now
    except BaseException:
        for written in unrecorded:
            if os.path.isfile(written) and not os.path.islink(written):
                os.remove(written)
        folder.discard()
        raise
    folder.close()
    return relay


def progress_text(relay, relay_dir):
    """PROGRESS.md: where the run stands, in a few lines, and the commands
    that continue it from ``relay_dir``."""
    done, planned = relay['epochs_done'], relay['epochs_planned']
    run, latest = relay['run'], relay['latest'] or {}
    trained = finished(relay)
    if trained:
        state, standing = 'TRAINING FINISHED', 'Training is finished.'
    else:
        state, standing = 'IN PROGRESS', (
            'Not a result yet: the run is not finished.')
    lines = [
        '# {} — {} (a relay of resumable sittings)'.format(
            run['protocol'], state), '',
        '{} Epochs done: main {} of {}, joint {} of {}. Saved {} time(s) so '
        'far, the last at {} UTC (relay.json lists every save with its '
        'note).'.format(
            standing, done['main'], planned['main'], done['joint'],
            planned['joint'], len(relay['sittings']),
            relay['sittings'][-1]['saved_utc']), '',
        _time_left(relay), '']
    accuracies = ['{}: {:.2f} %'.format(key.split('/')[-2] if 'exit' in key
                                        else 'main network', 100 * value)
                  for key, value in sorted(latest.items())
                  if key.startswith('validation/') and
                  key.endswith('accuracy') and value is not None]
    if accuracies:
        # the latest entry's phase: the joint snapshot may come before
        # the joint phase's first log entry
        phase = 'joint' if done['joint'] else 'main'
        lines += ['Latest test accuracy (epoch {} of the {} phase): {}.'.format(
            latest.get('epoch'), phase, ', '.join(accuracies)), '']
    ranks = (run.get('distributed') or {}).get('ranks', 1)
    launch = 'OPENBLAS_NUM_THREADS=1 .venv/bin/mpiexec -n {} '.format(ranks) \
        if ranks > 1 else ''
    key = run['protocol']
    relay_dir = os.path.normpath(relay_dir)
    commands = [
        '.venv/bin/python experiments/relay.py restore {} /tmp/{}'.format(
            relay_dir, key),
        '{}nice .venv/bin/python experiments/run_{}.py --resume -o /tmp/{} '
        '--data-dir DATA'.format(launch, key, key)]
    if trained:
        lines += ['Its models come back on {} rank(s), as it ran (DATA: the '
                  'dataset folder): resumed, a finished run trains nothing '
                  'more; it writes its models and evaluates them.'.format(
                      ranks), '', '```bash'] + commands + [
            '```', '', 'Training curves: `progress.png`.', '']
    else:
        lines += ['Continue it on {} rank(s), as it started (DATA: the '
                  'dataset folder):'.format(ranks), '', '```bash'] + \
            commands + [
            '.venv/bin/python experiments/relay.py save /tmp/{} {}'.format(
                key, relay_dir),
            '```', '', 'Curves so far: `progress.png`.', '']
    return '\n'.join(lines)


def _draw(relay, logs, folder):
    from branchynet.runs import figures
    if not figures.available():
        return
    figure = figures.curves(
        logs.get('main') or [], logs.get('joint') or [],
        '[TRAINING FINISHED] {}: training curves'.format(
            relay['run']['protocol']) if finished(relay) else
        '[IN PROGRESS] {}: training so far'.format(relay['run']['protocol']))
    with folder.open_file('progress.png') as f:
        figure.savefig(f, format='png', bbox_inches='tight', dpi=120)
