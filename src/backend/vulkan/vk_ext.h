/*
 * vk_ext.h: minimal copies of the Vulkan structures of three extensions
 * newer than the headers this project builds against (1.3.239):
 * VK_KHR_cooperative_matrix, VK_NV_cooperative_matrix2 and
 * VK_KHR_shader_bfloat16 (the device features and matrix lists of the
 * cooperative-matrix shaders, vk_coopmat.c).
 *
 * Our own names (chm_vk_*), so that they never clash with a newer
 * vulkan_core.h; the layouts and numbers are vulkan_core.h's (checked
 * against Vulkan-Headers: sType values 1000506000 / 1000506001 / 1000506002
 * (KHR cooperative matrix features / matrix-type properties / device
 * properties), 1000593000 / 1000593001 (NV cooperative matrix 2 features /
 * flexible-dimension properties), 1000141000 (bfloat16 features and
 * VK_COMPONENT_TYPE_BFLOAT16_KHR); member order as declared there).
 */
#ifndef CHIMERA_BACKEND_VK_EXT_H
#define CHIMERA_BACKEND_VK_EXT_H

#include <vulkan/vulkan.h>

#define CHM_VK_KHR_COOPMAT_NAME "VK_KHR_cooperative_matrix"
#define CHM_VK_NV_COOPMAT2_NAME "VK_NV_cooperative_matrix2"
#define CHM_VK_KHR_BF16_NAME "VK_KHR_shader_bfloat16"

#define CHM_VK_STYPE_COOPMAT_FEATURES_KHR ((VkStructureType)1000506000)
#define CHM_VK_STYPE_COOPMAT_PROPERTIES_KHR ((VkStructureType)1000506001)
#define CHM_VK_STYPE_COOPMAT_DEVICE_PROPERTIES_KHR ((VkStructureType)1000506002)
#define CHM_VK_STYPE_COOPMAT2_FEATURES_NV ((VkStructureType)1000593000)
#define CHM_VK_STYPE_COOPMAT_FLEX_PROPERTIES_NV ((VkStructureType)1000593001)
#define CHM_VK_STYPE_BF16_FEATURES_KHR ((VkStructureType)1000141000)

/* VkComponentTypeKHR values (FLOAT16 and FLOAT32 equal the NV ones) and VkScopeKHR's
   workgroup and subgroup. */
#define CHM_VK_COMPONENT_FLOAT16 0u
#define CHM_VK_COMPONENT_FLOAT32 1u
#define CHM_VK_COMPONENT_BFLOAT16 1000141000u
#define CHM_VK_SCOPE_WORKGROUP 2u
#define CHM_VK_SCOPE_SUBGROUP 3u

/* VkPhysicalDeviceCooperativeMatrixFeaturesKHR */
typedef struct chm_vk_coopmat_features_khr {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix;
    VkBool32 cooperativeMatrixRobustBufferAccess;
} chm_vk_coopmat_features_khr;

/* VkPhysicalDeviceCooperativeMatrixPropertiesKHR */
typedef struct chm_vk_coopmat_device_props_khr {
    VkStructureType sType;
    void *pNext;
    VkShaderStageFlags cooperativeMatrixSupportedStages;
} chm_vk_coopmat_device_props_khr;

/* VkCooperativeMatrixPropertiesKHR (component types and scope as uint32_t) */
typedef struct chm_vk_coopmat_props_khr {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize, NSize, KSize;
    uint32_t AType, BType, CType, ResultType;
    VkBool32 saturatingAccumulation;
    uint32_t scope;
} chm_vk_coopmat_props_khr;

/* vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR */
typedef VkResult(VKAPI_PTR *chm_vk_coopmat_props_fn)(VkPhysicalDevice, uint32_t *,
                                                     chm_vk_coopmat_props_khr *);

/* VkPhysicalDeviceCooperativeMatrix2FeaturesNV */
typedef struct chm_vk_coopmat2_features_nv {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrixWorkgroupScope;
    VkBool32 cooperativeMatrixFlexibleDimensions;
    VkBool32 cooperativeMatrixReductions;
    VkBool32 cooperativeMatrixConversions;
    VkBool32 cooperativeMatrixPerElementOperations;
    VkBool32 cooperativeMatrixTensorAddressing;
    VkBool32 cooperativeMatrixBlockLoads;
} chm_vk_coopmat2_features_nv;

/* VkCooperativeMatrixFlexibleDimensionsPropertiesNV (component types and scope as uint32_t) */
typedef struct chm_vk_coopmat_flex_nv {
    VkStructureType sType;
    void *pNext;
    uint32_t MGranularity, NGranularity, KGranularity;
    uint32_t AType, BType, CType, ResultType;
    VkBool32 saturatingAccumulation;
    uint32_t scope;
    uint32_t workgroupInvocations;
} chm_vk_coopmat_flex_nv;

/* vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV */
typedef VkResult(VKAPI_PTR *chm_vk_flex_fn)(VkPhysicalDevice, uint32_t *, chm_vk_coopmat_flex_nv *);

/* VkPhysicalDeviceShaderBfloat16FeaturesKHR */
typedef struct chm_vk_bf16_features_khr {
    VkStructureType sType;
    void *pNext;
    VkBool32 shaderBFloat16Type;
    VkBool32 shaderBFloat16DotProduct;
    VkBool32 shaderBFloat16CooperativeMatrix;
} chm_vk_bf16_features_khr;

#endif
