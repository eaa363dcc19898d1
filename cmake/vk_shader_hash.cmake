# vk_shader_hash.cmake: chimera_vk_shader_hash(root out_var), one SHA-256 over
# every shaders/*.comp and *.glsl and cmake/vk_shaders.cmake (sorted by
# name), so that an exported SPIR-V set can tell whether it still matches
# the sources (cmake/vk_shaders.cmake, cmake/spirv_export.cmake).
function(chimera_vk_shader_hash root out_var)
  file(GLOB _files ${root}/shaders/*.comp ${root}/shaders/*.glsl)
  list(SORT _files)
  list(APPEND _files ${root}/cmake/vk_shaders.cmake)
  set(_all "")
  foreach(f IN LISTS _files)
    file(SHA256 ${f} _h)
    get_filename_component(_name ${f} NAME)
    string(APPEND _all "${_name}:${_h}\n")
  endforeach()
  string(SHA256 _hash "${_all}")
  set(${out_var} ${_hash} PARENT_SCOPE)
endfunction()
