/*
 * vk_coopmat.h: which cooperative-matrix paths a vulkan device gets (vk_coopmat.c), for
 * vk_context.c's device creation: the features to query, the decision (caps.coopmat,
 * coopmat_khr, coopmat_bf16(_native), coopmat2, the tiles), the features to enable.
 */
#ifndef CHIMERA_BACKEND_VK_COOPMAT_H
#define CHIMERA_BACKEND_VK_COOPMAT_H

#include "vk.h"
#include "vk_ext.h"

/* What the device offers: feature and property structures, filled by the two queries. */
typedef struct chm_vk_cm_query {
    bool ext;            /* VK_NV_cooperative_matrix */
    bool feature;        /* its cooperativeMatrix, with compute among the supported stages */
    bool memory_model;   /* vulkanMemoryModel */
    /* VK_KHR_cooperative_matrix, VK_NV_cooperative_matrix2, VK_KHR_shader_bfloat16 */
    bool khr, nv2, bf16;
    VkPhysicalDeviceCooperativeMatrixFeaturesNV nv_f;
    VkPhysicalDeviceCooperativeMatrixPropertiesNV nv_p;
    chm_vk_coopmat_features_khr khr_f;
    chm_vk_coopmat_device_props_khr khr_p; /* the stages that run KHR matrices */
    chm_vk_coopmat2_features_nv nv2_f;
    chm_vk_bf16_features_khr bf16_f;
    bool sgc; /* VK_EXT_subgroup_size_control (core in 1.3): a pipeline may pin its size */
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgc_f;
    VkPhysicalDeviceSubgroupSizeControlPropertiesEXT sgc_p;
} chm_vk_cm_query;

/* Put q's feature structures of the extensions the device has in front of *head (for
   vkGetPhysicalDeviceFeatures2). */
void chm_vk_cm_query_features(chm_vk *vk, chm_vk_cm_query *q, void **head);
/* After the features are read: the properties, and q's summary bits (memory_model: the
   device's vulkanMemoryModel). */
void chm_vk_cm_query_props(chm_vk *vk, chm_vk_cm_query *q, bool memory_model);
/* Decide every cooperative-matrix path into vk->caps (caps.cm_pin_subgroup: their pipelines
   pin the subgroup size, chm_vk_cm_pins); a config error for a bad variable. */
chm_status chm_vk_cm_decide(chm_vk *vk, chm_vk_cm_query *q, chm_err *err);
/* The extensions (appended to exts) and features (in front of *head, kept in q) that the
   decided paths need at device creation. */
void chm_vk_cm_enable(const chm_vk *vk, chm_vk_cm_query *q, void **head, const char **exts,
                      uint32_t *nexts);

#endif
