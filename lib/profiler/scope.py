"""Which module is running: the modules reported at a depth, and a stack kept by global forward hooks."""
import torch
from torch import nn

MODEL_ROW = "(model)"  # ops run by a forward outside every reported module (a torch.cat in a U-Net's forward)
OUTSIDE_ROW = "(outside forward)"  # ops run outside any forward (the loss)


def select_modules(model: nn.Module, depth: int = 1) -> list:
    """[(qualified name, module)] reported at `depth`: modules `depth` levels below `model`, plus leaves
    above that level, so the rows cover every layer. Entries of a ModuleList/ModuleDict stand at the
    container's level (a container is never called itself)."""
    if depth < 1:
        raise ValueError(f"profile depth must be >= 1, got {depth}")
    out = []

    def visit(prefix, module, level):
        for name, child in module.named_children():
            full = prefix + name
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
                visit(full + ".", child, level)
            elif level == depth or next(child.children(), None) is None:
                out.append((full, child))
            else:
                visit(full + ".", child, level + 1)

    visit("", model, 1)
    return out


def tensors_in(obj):
    """Tensors inside a module's inputs or outputs: tensors, lists/tuples/dicts of them, and objects
    carrying features as `.feats` (SparseTensor) or `.feat` (PointBatch)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)
    else:
        for attr in ("feats", "feat"):
            value = getattr(obj, attr, None)
            if isinstance(value, torch.Tensor):
                yield value


def rows_of(args) -> int:
    """Rows (voxels) of a model input: the length of the first tensor found in it, 0 without one."""
    first = next(tensors_in(args), None)
    return 0 if first is None or first.dim() == 0 else int(first.shape[0])


class ModuleScope:
    """While open, keeps the stack of running modules (global forward hooks, so it sees every call).

    Args:
        names: {module: reported name}; `current()` is the innermost running module in it,
            MODEL_ROW while some other module runs, None outside any forward.
        on_enter(name, module, args) / on_exit(name, module, args, output): called for named
            modules; on_exit also runs when the forward raises (output None).
        on_root(args): called when an outermost forward begins.
    """

    def __init__(self, names: dict, on_enter=None, on_exit=None, on_root=None):
        self.names = {id(m): n for m, n in names.items()}
        self.on_enter, self.on_exit, self.on_root = on_enter, on_exit, on_root
        self._stack = []  # ids of the running modules, outermost first
        self._handles = []

    def current(self):
        for mid in reversed(self._stack):
            if mid in self.names:
                return self.names[mid]
        return MODEL_ROW if self._stack else None

    def _pre(self, module, args):
        if not self._stack and self.on_root is not None:
            self.on_root(args)
        self._stack.append(id(module))
        name = self.names.get(id(module))
        if name is not None and self.on_enter is not None:
            self.on_enter(name, module, args)

    def _post(self, module, args, output=None):
        while self._stack and self._stack[-1] != id(module):
            self._stack.pop()  # a forward that raised before its children's hooks closed
        if self._stack:
            self._stack.pop()
        name = self.names.get(id(module))
        if name is not None and self.on_exit is not None:
            self.on_exit(name, module, args, output)

    def __enter__(self):
        from torch.nn.modules import module as M

        self._handles = [M.register_module_forward_pre_hook(self._pre),
                         M.register_module_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._stack = []
        return False
