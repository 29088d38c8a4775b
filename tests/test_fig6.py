"""Fig. 6 from the cache simulator: the caches read and rounded, callgrind's
dumps read, the miss rates, and a smoke run under valgrind."""
import json
import os

import pytest

from helpers import ROOT, run_main
from branchynet.paper import protocols
from branchynet.runs import fig6
from branchynet.utils.errors import UserError


def _sysfs(tmp_path, caches):
    for i, (level, kind, size, ways, line) in enumerate(caches):
        folder = tmp_path / 'index{}'.format(i)
        folder.mkdir()
        for name, value in (('level', level), ('type', kind), ('size', size),
                            ('ways_of_associativity', ways),
                            ('coherency_line_size', line)):
            (folder / name).write_text('{}\n'.format(value))
    return str(tmp_path)


def test_the_caches_are_read_and_rounded_to_what_the_simulator_takes(
        tmp_path):
    root = _sysfs(tmp_path, [(1, 'Data', '48K', 12, 64),
                             (1, 'Instruction', '32K', 8, 64),
                             (2, 'Unified', '2048K', 16, 64),
                             (3, 'Unified', '266240K', 20, 64)])
    caches = fig6.read_caches(root)
    assert caches[3] == {'level': 3, 'type': 'Unified',
                         'size': 266240 * 1024, 'ways': 20, 'line': 64}
    simulated = fig6.simulated_caches(caches)
    assert simulated['D1']['sets'] == 64 and not simulated['D1']['rounded']
    assert simulated['LL']['level'] == 3
    assert simulated['LL']['sets'] == 212992  # not a power of two
    assert simulated['LL']['rounded']
    assert simulated['LL']['simulated_size'] == 131072 * 20 * 64
    assert fig6.valgrind_flags(simulated) == [
        '--I1=32768,8,64', '--D1=49152,12,64', '--LL=167772160,20,64']
    with pytest.raises(UserError, match='level-1 Data'):
        fig6.simulated_caches([c for c in caches if c['type'] != 'Data'])


DUMP = """# callgrind format
version: 1
desc: Timerange: Basic block 0 - 3801776
desc: Trigger: Client Request: T=0.05
positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 1000 300 100 7 30 10 1 4 2
fn=(1) f
0 1 2 3
"""


def test_a_dump_gives_its_label_its_counts_and_the_miss_rates(tmp_path):
    path = tmp_path / 'callgrind.out.1'
    path.write_text(DUMP)
    label, counts = fig6.read_dump(str(path))
    assert label == 'T=0.05'
    assert counts == {'Ir': 1000, 'Dr': 300, 'Dw': 100, 'I1mr': 7,
                      'D1mr': 30, 'D1mw': 10, 'ILmr': 1, 'DLmr': 4,
                      'DLmw': 2}
    rates = fig6.miss_rates(counts)
    assert rates['D1'] == pytest.approx(40 / 400)
    assert rates['LLd'] == pytest.approx(6 / 400)
    assert rates['LL'] == pytest.approx(7 / 1400)
    path.write_text('events: Ir\n')
    with pytest.raises(UserError, match='not a callgrind dump'):
        fig6.read_dump(str(path))


def test_the_thresholds_are_the_sweep_list_on_every_branch_and_the_papers():
    alexnet = protocols.get('b_alexnet')
    vectors = fig6.threshold_vectors(alexnet, alexnet.threshold_list)
    assert vectors[0] == ('main network', None)
    assert vectors[1] == ('T=0.0001', [0.0001, 0.0001])
    assert len(vectors) == 1 + len(alexnet.threshold_list) + 1
    assert vectors[-1][1] == [0.0001, 0.05]
    lenet = protocols.get('b_lenet')  # its paper T is not in the list given
    assert [t for _, t in fig6.threshold_vectors(lenet, [0.025])] == [
        None, [0.025]]


@pytest.mark.skipif(fig6.missing_tools() is not None,
                    reason=str(fig6.missing_tools()))
def test_the_smoke_run_counts_the_inference_under_valgrind(data, tmp_path):
    out = str(tmp_path / 'fig6')
    # everything leaves at exit 1 (T huge), or nothing does (T = 0)
    run_main('make_fig6', ['--smoke', '--data-dir', data, '--out', out,
                           '--run', os.path.join(ROOT, 'figures', 'b_lenet'),
                           '--unofficial-data', '--thresholds', '1e9', '0'])
    results = json.load(open(os.path.join(out, 'fig6.json')))
    points = {p['label']: p for p in results['points']}
    assert list(points) == ['main network', 'T=1e+09', 'T=0',
                            "paper's T=(0.025)"]
    assert points['T=1e+09']['exit_shares'] == [1.0, 0.0]
    assert points['T=0']['exit_shares'] == [0.0, 1.0]
    # the early exit runs fewer instructions than the main network, the
    # whole B-network path (main network, exit 1's branch) more
    ir = {k: p['events']['Ir'] for k, p in points.items()}
    assert ir['T=1e+09'] < ir['main network'] < ir['T=0']
    for p in points.values():
        assert 0 < p['miss_rates']['D1'] < 1
        assert p['ms_per_sample'] > 0
    assert results['label'] == fig6.LABEL
    text = open(os.path.join(out, 'fig6.md')).read()
    assert 'not hardware counters' in text
    assert os.path.isfile(os.path.join(out, 'fig6.png'))
