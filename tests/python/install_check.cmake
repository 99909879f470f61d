# The documented install command works: `cmake --install <build> --component python` into a fresh
# prefix, then the installed package (with its quicksave libraries beside the extension) imports
# and saves/loads from a directory that is not the build tree, with nothing of the build on
# PYTHONPATH.  -DBUILD_DIR -DWORK_DIR -DPYTHON -DRELATIVE_SITE (the install dir under the prefix)
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --component python --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "cmake --install --component python failed: ${rc}")
endif()
set(site "${WORK_DIR}/prefix/${RELATIVE_SITE}")
file(WRITE "${WORK_DIR}/check.py" [=[
import os, sys, tempfile
import torch
import quicksave
site = sys.argv[1]
assert os.path.realpath(quicksave.__file__).startswith(os.path.realpath(site)), quicksave.__file__
directory = tempfile.mkdtemp()
quicksave.save_torch_state_dict({"w": torch.arange(6.0)}, directory)
with quicksave.Checkpointer() as ckpt:
    ckpt.save_async({"w": torch.arange(6.0)}, os.path.join(directory, "async")).committed().result()
model = torch.nn.Linear(2, 3)
quicksave.save_torch_model(model, os.path.join(directory, "m"), max_shard_size=16)
fresh = torch.nn.Linear(2, 3)
assert repr(quicksave.load_torch_model(fresh, os.path.join(directory, "m"), strict=True)) == "<All keys matched successfully>"
assert torch.equal(fresh.weight, model.weight)
print("installed quicksave works:", quicksave.__file__)
]=])
execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=PYTHONPATH "PYTHONPATH=${site}" PYTHONDONTWRITEBYTECODE=1
                        "${PYTHON}" "${WORK_DIR}/check.py" "${site}"
                WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the installed package does not work: ${rc}")
endif()
