"""model_hinge/errors.py: the library's one error, which the CLI's UsageError extends and main() reports."""

import shutil
import subprocess
import sys
import tomllib

import main_hinge
from conftest import ROOT
from model_hinge.errors import HingeError
from utils.errors import UsageError


def test_usage_errors_are_hinge_errors_and_value_errors():
    assert issubclass(UsageError, HingeError) and issubclass(HingeError, ValueError)


def test_a_library_error_ends_the_cli_with_one_sentence_and_status_2(monkeypatch, capsys):
    def refuse(args):
        raise HingeError('the compression plan names conv x.y, which this network does not have.')

    monkeypatch.setattr(main_hinge, 'run', refuse)
    assert main_hinge.main(['--template', 'Demo', '--model', 'ResNet', '--depth', '8', '--cpu']) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'main_hinge.py: error: the compression plan names conv x.y, which this network does not have.'


def test_the_installed_package_is_model_hinge_alone():
    config = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    assert config['project']['name'] == 'hinge' and config['tool']['setuptools']['packages'] == ['model_hinge']


def test_the_library_imports_without_the_rest_of_the_project(tmp_path):
    shutil.copytree(ROOT / 'model_hinge', tmp_path / 'model_hinge', ignore=shutil.ignore_patterns('__pycache__'))
    modules = 'model_hinge, model_hinge.core, model_hinge.surgery, model_hinge.counting, model_hinge.complexity'
    probe = (f'import sys, {modules}; '
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'utils', 'model', 'option', 'trainer', 'data'}))")
    done = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(tmp_path)})
    assert done.returncode == 0 and done.stdout.strip() == '[]', done.stderr
