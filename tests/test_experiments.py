"""The shapes study's machinery (experiments/): cache keys, result pages and the quick setting end to end."""

import json
import os


from experiments import common, report


def test_a_stage_key_changes_with_every_setting_and_with_its_init_sources():
  prior = common.Stage("pretrain", 2e-3)
  stage = common.Stage("stage2", 5e-4, init=(("prior", prior, 600),))
  assert stage.key == common.Stage("stage2", 5e-4, init=(("prior", common.Stage("pretrain", 2e-3), 600),)).key
  variants = [common.Stage("stage2", 5e-4, seed=1, init=stage.init),
              common.Stage("stage2", 1e-3, init=stage.init),
              common.Stage("stage2", 5e-4, init=(("prior", prior, 300),)),
              common.Stage("stage2", 5e-4, init=(("prior", common.Stage("pretrain", 2e-3, seed=1), 600),)),
              common.Stage("stage2", 5e-4, init=stage.init, settings=(("data.train_subset", 100),))]
  keys = {stage.key, *(variant.key for variant in variants)}
  assert len(keys) == 1 + len(variants)


def test_the_demo_recipe_is_configs_demo_and_its_step_overrides():
  recipe = common.demo_recipe(3, prior=80)
  assert (recipe.prior.job, recipe.stage1.job, recipe.stage2.job, recipe.upsampler.job) == (
      "pretrain", "stage1", "stage2", "upsample")
  assert {s.seed for s in (recipe.prior, recipe.stage1, recipe.stage2, recipe.upsampler)} == {3}
  assert recipe.steps["prior"] == 80 and recipe.steps["stage2"] == 500
  assert dict((name, steps) for name, _, steps in recipe.stage2.init) == {"prior": 80, "stage1": 200}
  assert (recipe.upsampler.image_size, recipe.upsampler.low_res_size, recipe.upsampler.init) == (32, 16, ())


def test_spreads_show_mean_and_extremes_over_seeds():
  assert common.show(common.spread([0.5])) == "0.500"
  assert common.show(common.spread([0.2, 0.4, 0.3]), 2) == "0.30 (0.20-0.40)"


def test_the_results_page_is_rebuilt_from_the_result_files(tmp_path):
  out = tmp_path / "results"
  out.mkdir()
  for name, title in (("samplers", "Samplers"), ("training_length", "Curves")):
    (out / f"{name}.json").write_text(json.dumps({
        "experiment": name, "title": title, "question": "Q?", "command": f"python -m experiments.{name}",
        "setting": "full", "seeds": [0, 1], "count": 64, "wall_seconds": 60.0, "compute_seconds": 600.0,
        "tables": [{"caption": "c", "columns": ["a", "b"], "rows": [[1, "0.5 (0.4-0.6)"]]}],
        "plots": [{"file": f"{name}.png", "caption": "p"}]}))
  page = (tmp_path / "results.md")
  assert report.write_markdown(str(out)) == str(page)
  text = page.read_text()
  assert text.index("## Curves") < text.index("## Samplers")  # the study's order, not the files'
  assert "| 1 | 0.5 (0.4-0.6) |" in text and "![p](results/samplers.png)" in text
  assert "10.0 min of training, sampling and scoring" in text



def test_the_pretraining_experiment_runs_end_to_end_in_its_quick_setting_and_then_reads_its_cache(tmp_path):
  """`python -m experiments.pretraining --quick --count 8`: trains, samples, scores and writes the page;
  run again, it trains, samples and scores nothing and gives the same tables."""
  from experiments import pretraining  # pylint: disable=import-outside-toplevel

  cache, out = tmp_path / "cache", tmp_path / "docs" / "results"
  argv = ["--quick", "--count", "8", "--cache", str(cache), "--out", str(out)]
  pretraining.main(argv)
  record = json.loads((out / "pretraining.json").read_text())
  assert (record["setting"], record["seeds"], record["count"]) == ("quick", [0], 8)
  sizes = pretraining.QUICK["sizes"]
  rows = record["tables"][0]["rows"]
  assert [row[:2] for row in rows] == [[size, init] for size in sizes for init in ("pretrained prior", "random init")]
  for summary in record["results"].values():
    assert 0.0 <= summary["miou"]["mean"] <= 1.0 and summary["fid"]["mean"] > 0.0 and summary["kid"]["mean"] > -1.0
  # The prior was trained once and is the init of every pretrained run; each run and sample folder is its own.
  stages = sorted(os.listdir(cache / "quick" / "stages"))
  assert len(stages) == 1 + 2 * len(sizes) and sum(name.startswith("pretrain-") for name in stages) == 1
  assert len(os.listdir(cache / "quick" / "scores")) == len(rows)
  assert f"train{common.QUICK_TRAIN_SCENES}_val64_seed0" in os.listdir(cache / "quick" / "tfds" / "shapes")
  assert record["compute_seconds"] > 0.0
  page = (tmp_path / "docs" / "results.md").read_text()
  assert "## Pretraining against training from scratch (quick setting)" in page and f"| {sizes[0]} | random init |" in page

  stored = {path: os.path.getmtime(path) for path in cache.rglob("*") if path.is_file()}
  pretraining.main(argv)
  assert {path: os.path.getmtime(path) for path in stored} == stored
  again = json.loads((out / "pretraining.json").read_text())
  assert again["tables"] == record["tables"] and again["results"] == record["results"]
