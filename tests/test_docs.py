"""The README and docs/ say what the code does: their commands use options the scripts take, the modules and files
they name exist, and the file formats they list are the ones the writers write."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex

import pytest

from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
PYTHON_SCRIPTS = ("T2T_ViT_preprocess.py", "T2T_ViT_pth2onnx.py", "gen_cfg.py", "T2T_ViT_infer.py",
                  "T2T_ViT_postprocess.py", "T2T_ViT_doctor.py", "T2T_ViT_eval.py")


def script_options(script: str) -> set[str]:
    """Every option string a script's parser (or T2T_ViT_atc.sh's argument loop) takes."""
    if script == "T2T_ViT_atc.sh":
        return set(re.findall(r"^\s+(--[a-z-]+)(?:\|[^)]*)?\)", (REPO_ROOT / script).read_text(), re.M)) | {"-h"}
    module = importlib.import_module(script[:-3])
    return set(module.build_parser()._option_string_actions)


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, its words) of every command in a page's bash blocks that runs one of the toolkit's scripts."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            for part in re.split(r"[;|&]+|\bdo\b", line):
                words = shlex.split(part, posix=True) if part.count('"') % 2 == 0 else part.split()
                for index, word in enumerate(words):
                    name = word.rsplit("/", 1)[-1]
                    if name in PYTHON_SCRIPTS + ("T2T_ViT_atc.sh", "T2T_ViT_eval.sh"):
                        found.append((name, words[index + 1:]))
                        break
    return found


def test_the_readme_is_short_and_points_to_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    named = set(re.findall(r"docs/([a-z0-9-]+\.md)", text))
    assert named == {page.name for page in DOCS}


def test_every_command_in_the_readme_and_docs_uses_options_its_script_takes():
    checked = 0
    for page in PAGES:
        for script, words in commands(page.read_text()):
            options = script_options("T2T_ViT_eval.py" if script == "T2T_ViT_eval.sh" else script)
            flags = [word.split("=")[0] for word in words if word.startswith("-") and not word[1:2].isdigit()]
            unknown = [flag for flag in flags if flag not in options]
            assert unknown == [], (page.name, script, words)
            checked += 1
    assert checked > 40  # the pages really hold commands, and they are really read


def test_the_check_catches_an_option_a_script_does_not_take():
    text = "```bash\npython3 T2T_ViT_preprocess.py --data-dir d --out-dirr o\n```\n"
    ((script, words),) = commands(text)
    assert "--out-dirr" not in script_options(script) and "--data-dir" in script_options(script)


def test_every_module_and_package_file_the_docs_name_exists():
    names = set()
    for page in PAGES:
        text = page.read_text()
        names |= {("path", path) for path in re.findall(r"\bt2t_vit/[\w/]+\.(?:py|txt)\b", text)}
        names |= {("module", module) for module in re.findall(r"python3? -m (t2t_vit[\w.]*)", text)}
    assert len(names) > 10
    missing = [name for kind, name in sorted(names)
               if (kind == "path" and not (REPO_ROOT / name).is_file())
               or (kind == "module" and importlib.util.find_spec(name) is None)]
    assert missing == []


def _bullet(name: str) -> str:
    text = (REPO_ROOT / "docs" / "formats.md").read_text()
    return re.search(r"^- \*\*" + re.escape(name) + r"\*\*(.*?)(?=^- \*\*|\Z)", text, re.S | re.M).group(1)


def test_the_om_record_fields_in_the_docs_are_the_ones_its_writer_writes():
    from t2t_vit.ascend.om_record import FIELDS

    bullet = _bullet("`.om` build record")
    listed = bullet.split("):", 1)[1].split(".", 1)[0]
    assert re.findall(r"`(\w+)`", listed) == list(FIELDS)


def test_the_stamp_keys_and_the_manifest_format_in_the_docs_are_the_writers():
    from t2t_vit.data.bins import MANIFEST_FORMAT
    from t2t_vit.job.stamps import _KEY_WORDS

    stamp_fields = set(re.findall(r"`(\w+)`", _bullet("stamps").split("made with,", 1)[1]))
    assert stamp_fields == set(_KEY_WORDS) | {"date"}
    assert f"`format` (`{MANIFEST_FORMAT}`)" in _bullet("manifest")


def test_the_device_folder_names_in_the_docs_are_the_ones_written():
    from t2t_vit.aisbench import DEVICE_FILE_SUFFIXES, device_folder

    bullet = _bullet("device folders")
    assert device_folder(3, 1) == "device3_1" and "`device<N>_<i>/`" in bullet
    assert all(f"`device<N>_<i>{suffix}`" in bullet for suffix in DEVICE_FILE_SUFFIXES)


# Every long option of each script's parser before the package was split by stage (read from cd56b7b's parsers).
OPTIONS_BEFORE = {
    "T2T_ViT_preprocess.py": "--class-list --crop-pct --data-dir --devkit --dtype --gt-path --img-size --interpolation "
                             "--label-file --limit --no-progress --out-dir --quiet --skip-bad --verbose --workers",
    "T2T_ViT_pth2onnx.py": "--input-dtype --model --onnx-path --opset --performer --pth-path --quiet --tolerance "
                           "--verbose --weights",
    "gen_cfg.py": "--agreement --explain --images --input --keep-dtype --minimize --quiet --report --tolerance --verbose",
    "T2T_ViT_infer.py": "--acl_json_path --aipp_config --auto_set_dymdims_mode --auto_set_dymshape_mode --backend "
                        "--batchsize --debug --device --display_all_summary --divide-input --divide_input --dump "
                        "--dymBatch --dymDims --dymHW --dymShape --dymShape_range --energy_consumption --input "
                        "--keep-dtype --loop --micro-batch --model --no-progress --npu-accumulate --npu_id --outfmt "
                        "--output --output-dirname --outputSize --output_batchsize_axis --output_dirname --precision "
                        "--profiler --pure_data_type --quiet --resume --run_mode --streams --threads --verbose "
                        "--warmup-count --warmup_count",
    "T2T_ViT_postprocess.py": "--allow-constant --allow-missing --compare-dir --gt-path --per-class --quiet "
                              "--result-dir --results-file --verbose",
    "T2T_ViT_doctor.py": "--data-dir --img-size --json --quiet --verbose --work-dir",
    "T2T_ViT_eval.py": "--pth-path --model --demo --demo-images --data-dir --label-file --devkit --class-list "
                       "--batch-sizes --work-dir --om-dir --device --accuracy-batch --accuracy-all --loop "
                       "--emulate-npu --dtype --allow-constant --skip-bad --workers --backend --threads --no-progress "
                       "--quiet --verbose",
}


@pytest.mark.parametrize("script", PYTHON_SCRIPTS)
def test_every_script_keeps_its_options(script):
    """The options each script took before the package was split by stage, still taken."""
    before = set(OPTIONS_BEFORE[script].split())
    assert before - script_options(script) == set()
