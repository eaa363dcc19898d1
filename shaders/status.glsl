/*
 * status.glsl: how a shader reports bad data (an id out of range) without
 * a host round trip. Define CHM_STATUS_BINDING (the binding after the
 * op's own) before including it. The first report since the last check
 * wins; chm_sync and downloads turn it into an error (vk_commands.c).
 * Codes: see CHM_VK_STATUS_* in src/backend/vulkan/vk.h.
 */
layout(binding = CHM_STATUS_BINDING) buffer Status { uint status_words[4]; };

void chm_raise(uint code, uint a, uint b, uint c) {
    if (atomicCompSwap(status_words[0], 0u, code) == 0u) {
        status_words[1] = a;
        status_words[2] = b;
        status_words[3] = c;
    }
}
