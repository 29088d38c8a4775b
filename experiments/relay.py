"""Carry a long training run across sittings: pack its latest state, or unpack it.

    python experiments/relay.py save RUN_DIR figures/b_alexnet [--note TEXT]
    python experiments/relay.py restore figures/b_alexnet RUN_DIR

save writes the run's latest snapshot (one file), logs, configuration and a
progress report into the relay folder; restore makes a new run folder from
it that the run script continues with --resume (on as many ranks as the run
started with). What a relay holds: branchynet/runs/relay.py.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli, relay


def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    save = commands.add_parser('save', help='pack RUN_DIR into RELAY_DIR')
    save.add_argument('run_dir', metavar='RUN_DIR')
    save.add_argument('relay_dir', metavar='RELAY_DIR')
    save.add_argument('--note', help='a line about this sitting, kept in '
                                     'relay.json')
    restore = commands.add_parser(
        'restore', help='make RUN_DIR (new or empty) the run of RELAY_DIR')
    restore.add_argument('relay_dir', metavar='RELAY_DIR')
    restore.add_argument('run_dir', metavar='RUN_DIR')
    args = parser.parse_args(argv)
    with cli.one_line_errors(parser.prog):
        if args.command == 'save':
            done = relay.save(args.run_dir, args.relay_dir, args.note)
            print('{} saved to {}: epochs done {}'.format(
                args.run_dir, args.relay_dir, done['epochs_done']))
        else:
            done = relay.restore(args.relay_dir, args.run_dir)
            print('{} restored into {} (epochs done {}); continue it with '
                  'the run script, --resume -o {}'.format(
                      args.relay_dir, args.run_dir, done['epochs_done'],
                      args.run_dir))
    return done


if __name__ == '__main__':
    main()
