"""The dataset over scenes stored as .npy arrays by scripts/preprocess.py (ScanNet, S3DIS, folder)."""
from datasets import store
from datasets.voxel_dataset import VoxelDataset, check_scene_arrays


class StoredSceneDataset(VoxelDataset):
    def load_scene(self, scene_id: str) -> dict:
        coord = store.load_array(self.root, scene_id, "coord")
        label = store.load_array(self.root, scene_id, "label")
        check_scene_arrays(store.scene_dir(self.root, scene_id), coord, label, self.meta.num_classes)
        scene = {"coord": coord, "label": label}
        if "rgb" in self.features:
            scene["color"] = store.load_array(self.root, scene_id, "color")
        if "normal" in self.features:
            scene["normal"] = store.load_array(self.root, scene_id, "normal")
        return scene
