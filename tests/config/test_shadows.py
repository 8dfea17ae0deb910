"""Keys that shadow each other (issue 23): the layer that names a key of the pair decides, the
command line says what it replaced, and a layer setting both is an error naming both."""
import pytest
import yaml

from lib.config import ConfigError, load_config


def test_iterations_on_the_command_line_beat_the_recipes_epochs():
    base = load_config("scannet_ptv3.yaml")
    assert base.train.epochs == 800  # the recipe trains by epochs
    cfg = load_config("scannet_ptv3.yaml", ["train.iterations=3"])
    assert (cfg.train.iterations, cfg.train.epochs) == (3, 0)
    assert any("train.iterations=3 (command line) replaces train.epochs=800" in n and "scannet_ptv3.yaml" in n
               for n in cfg.notes), cfg.notes


@pytest.mark.parametrize("recipe", ["s3dis_ptv3", "semantickitti_ptv3", "semantickitti_mink", "semantickitti_tr"])
def test_every_epoch_recipe(recipe):
    cfg = load_config(recipe, ["train.iterations=3"])
    assert (cfg.train.iterations, cfg.train.epochs) == (3, 0)


def test_epochs_on_the_command_line_beat_the_recipes_iterations():
    cfg = load_config("scannet_tr.yaml", ["train.epochs=2"])
    assert cfg.train.epochs == 2
    assert any("train.epochs=2 (command line) replaces train.iterations=120000" in n for n in cfg.notes)


def test_both_on_the_command_line_is_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"'train.iterations' and 'train.epochs' are both set \(command line\)"):
        load_config("scannet_tr.yaml", ["train.iterations=3", "train.epochs=2"])
    cfg = load_config("scannet_ptv3.yaml", ["train.iterations=3", "train.epochs=0"])  # consistent: fine
    assert (cfg.train.iterations, cfg.train.epochs) == (3, 0)


def test_warmup_iters_beat_the_recipes_warmup_ratio():
    assert load_config("semantickitti_mink.yaml").train.scheduler.warmup_ratio > 0
    cfg = load_config("semantickitti_mink.yaml", ["train.scheduler.warmup_iters=10"])
    assert (cfg.train.scheduler.warmup_iters, cfg.train.scheduler.warmup_ratio) == (10, 0.0)
    assert any("warmup_ratio is back to 0" in n for n in cfg.notes)


def test_recipe_layers(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"data": {"dataset": "scannet"}, "train": {"epochs": 5}}))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"_base_": "base.yaml", "train": {"iterations": 7}}))
    cfg = load_config(child)
    assert (cfg.train.iterations, cfg.train.epochs) == (7, 0)  # the more specific file wins
    grandchild = tmp_path / "grandchild.yaml"  # a chain whose base holds both keys from two files
    grandchild.write_text(yaml.safe_dump({"_base_": "middle.yaml"}))
    (tmp_path / "top.yaml").write_text(yaml.safe_dump({"data": {"dataset": "scannet"}, "train": {"iterations": 7}}))
    (tmp_path / "middle.yaml").write_text(yaml.safe_dump({"_base_": "top.yaml", "train": {"epochs": 5}}))
    cfg = load_config(grandchild)
    assert cfg.train.epochs == 5  # the middle file switched epochs on over the top file's iterations
    assert (load_config(grandchild, ["train.iterations=3"]).train.epochs) == 0
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"data": {"dataset": "scannet"}, "train": {"epochs": 5, "iterations": 7}}))
    with pytest.raises(ConfigError, match=r"'train.iterations' and 'train.epochs' are both set \(.*both.yaml\)"):
        load_config(both)


def test_swapping_the_model_drops_the_recipes_args():
    import models

    cfg = load_config("scannet_ptv3.yaml", ["model.name=Res16UNet14A"])
    assert cfg.model.args == {}
    assert any("model.name=Res16UNet14A (command line) replaces PTv3" in n and "enc_depths" in n for n in cfg.notes)
    assert models.build_model(cfg.model, 3, 20) is not None  # no model.args={} needed
    cfg = load_config("scannet_ptv3.yaml", ["model.name=Res16UNet14A", "model.args.bn_momentum=0.2"])
    assert cfg.model.args == {"bn_momentum": 0.2}
    # the same name again keeps the recipe's args
    assert load_config("scannet_ptv3.yaml", ["model.name=PTv3"]).model.args == load_config("scannet_ptv3.yaml").model.args


def test_did_you_mean_names_an_argument_of_the_new_model():
    import inspect

    import models
    from models.build import MODELS

    cfg = load_config("scannet_ptv3.yaml", ["model.name=Res16UNet14A", "model.args.bn_momentun=0.2"])
    with pytest.raises(ConfigError, match=r"Res16UNet14A has no such argument; did you mean 'bn_momentum'") as info:
        models.build_model(cfg.model, 3, 20)
    assert "bn_momentum" in inspect.signature(MODELS["Res16UNet14A"].__init__).parameters
    assert "enc_depths" not in str(info.value)


def test_an_override_that_does_nothing_says_so():
    cfg = load_config("scannet_ptv3.yaml", ["train.optimizer.momentum=0.5"])  # adamw
    assert any("train.optimizer.momentum (command line) has no effect: train.optimizer.name is 'adamw'" in n
               for n in cfg.notes)
    assert not load_config("scannet_tr.yaml", ["train.optimizer.momentum=0.5"]).notes  # sgd: it acts


def test_an_override_under_a_switch_that_is_off_says_so():
    cfg = load_config("scannet_tr.yaml", ["eval.tta.rotations=4"])
    assert any("eval.tta.rotations (command line) has no effect: eval.tta.enabled is False" in n for n in cfg.notes)
    assert not load_config("scannet_tr.yaml", ["eval.tta.rotations=4", "eval.tta.enabled=true"]).notes
