/* The XLA FFI handlers of ptychostitch's operators: each decodes XLA's call frame (the C ABI of
 * the vendored `xla/ffi/api/c_api.h`) into `ps_call` -- plain buffers and the operator's
 * attributes -- and hands it to Rust (`ptychostitch_xla_execute`, src/xla/mod.rs), which runs
 * the operation. Written in C so that every struct is read through the header's own
 * definitions, not a hand-made mirror of them.
 *
 * One handler per platform serves every operator (the `op` attribute names it): the CPU's,
 * and CUDA's, which also asks XLA for its stream and device ordinal -- the device kernels are
 * queued on XLA's own stream. */

#include <stdio.h>
#include <string.h>

#include "xla/ffi/api/c_api.h"

#define PS_MAX_BUFFERS 8

typedef struct {
  int32_t dtype; /* XLA_FFI_DataType */
  int64_t rank;
  const int64_t* dims;
  void* data;
} ps_buffer;

typedef struct {
  const char* op;
  size_t op_len;
  const char* spec;
  size_t spec_len;
  int64_t rank; /* the first operand's rank when traced: one more means a folded vmap axis */
  int64_t n_args;
  ps_buffer args[PS_MAX_BUFFERS];
  int64_t n_rets;
  ps_buffer rets[PS_MAX_BUFFERS];
  void* stream; /* the CUDA stream (CUstream), NULL on the CPU */
  int32_t ordinal; /* the CUDA device's ordinal (CUDA only) */
} ps_call;

/* Runs the call; 0 on success, else writes a NUL-terminated message into `message`. */
extern int32_t ptychostitch_xla_execute(const ps_call* call, char* message, size_t capacity);

static XLA_FFI_Error* ps_error(const XLA_FFI_Api* api, XLA_FFI_Error_Code code, const char* message) {
  XLA_FFI_Error_Create_Args args;
  memset(&args, 0, sizeof args);
  args.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  args.message = message;
  args.errc = code;
  return api->XLA_FFI_Error_Create(&args);
}

static int ps_name_is(const XLA_FFI_ByteSpan* name, const char* want) {
  size_t n = strlen(want);
  return name->len == n && memcmp(name->ptr, want, n) == 0;
}

static XLA_FFI_Error* ps_buffers(const XLA_FFI_Api* api, int64_t count, void** items, ps_buffer* out,
                                 int64_t* n_out) {
  if (count > PS_MAX_BUFFERS) {
    return ps_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "ptychostitch: too many operands");
  }
  for (int64_t i = 0; i < count; ++i) {
    const XLA_FFI_Buffer* b = (const XLA_FFI_Buffer*)items[i];
    out[i].dtype = (int32_t)b->dtype;
    out[i].rank = b->rank;
    out[i].dims = b->dims;
    out[i].data = b->data;
  }
  *n_out = count;
  return NULL;
}

static XLA_FFI_Error* ps_handle(XLA_FFI_CallFrame* frame, int cuda) {
  /* Registration asks what API version the handler was built against. */
  XLA_FFI_Extension_Base* ext = frame->extension_start;
  if (ext != NULL && ext->type == XLA_FFI_Extension_Metadata) {
    XLA_FFI_Metadata* m = ((XLA_FFI_Metadata_Extension*)ext)->metadata;
    m->api_version.major_version = XLA_FFI_API_MAJOR;
    m->api_version.minor_version = XLA_FFI_API_MINOR;
    m->traits = 0; /* not captured into command buffers: the CUDA path plans on the host */
    return NULL;
  }
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) {
    return NULL;
  }
  const XLA_FFI_Api* api = frame->api;
  ps_call call;
  memset(&call, 0, sizeof call);
  call.rank = -1;
  for (int64_t i = 0; i < frame->args.size; ++i) {
    if (frame->args.types[i] != XLA_FFI_ArgType_BUFFER) {
      return ps_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "ptychostitch: an operand is not a buffer");
    }
  }
  for (int64_t i = 0; i < frame->rets.size; ++i) {
    if (frame->rets.types[i] != XLA_FFI_RetType_BUFFER) {
      return ps_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, "ptychostitch: a result is not a buffer");
    }
  }
  XLA_FFI_Error* err = ps_buffers(api, frame->args.size, frame->args.args, call.args, &call.n_args);
  if (err == NULL) {
    err = ps_buffers(api, frame->rets.size, frame->rets.rets, call.rets, &call.n_rets);
  }
  if (err != NULL) {
    return err;
  }
  for (int64_t i = 0; i < frame->attrs.size; ++i) {
    const XLA_FFI_ByteSpan* name = frame->attrs.names[i];
    if (frame->attrs.types[i] == XLA_FFI_AttrType_STRING) {
      const XLA_FFI_ByteSpan* value = (const XLA_FFI_ByteSpan*)frame->attrs.attrs[i];
      if (ps_name_is(name, "op")) {
        call.op = value->ptr;
        call.op_len = value->len;
      } else if (ps_name_is(name, "spec")) {
        call.spec = value->ptr;
        call.spec_len = value->len;
      }
    } else if (frame->attrs.types[i] == XLA_FFI_AttrType_SCALAR && ps_name_is(name, "rank")) {
      const XLA_FFI_Scalar* value = (const XLA_FFI_Scalar*)frame->attrs.attrs[i];
      if (value->dtype == XLA_FFI_DataType_S64) {
        call.rank = *(const int64_t*)value->value;
      } else if (value->dtype == XLA_FFI_DataType_S32) {
        call.rank = *(const int32_t*)value->value;
      }
    }
  }
  if (call.op == NULL || call.spec == NULL || call.rank < 0) {
    return ps_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                    "ptychostitch: the custom call lacks its op, spec or rank attribute");
  }
  if (cuda) {
    XLA_FFI_Stream_Get_Args args;
    memset(&args, 0, sizeof args);
    args.struct_size = XLA_FFI_Stream_Get_Args_STRUCT_SIZE;
    args.ctx = frame->ctx;
    err = api->XLA_FFI_Stream_Get(&args);
    if (err != NULL) {
      return err;
    }
    call.stream = args.stream;
    XLA_FFI_DeviceOrdinal_Get_Args device;
    memset(&device, 0, sizeof device);
    device.struct_size = XLA_FFI_DeviceOrdinal_Get_Args_STRUCT_SIZE;
    device.ctx = frame->ctx;
    err = api->XLA_FFI_DeviceOrdinal_Get(&device);
    if (err != NULL) {
      return err;
    }
    call.ordinal = device.device_ordinal;
  }
  char message[1024];
  message[0] = '\0';
  if (ptychostitch_xla_execute(&call, message, sizeof message) != 0) {
    message[sizeof message - 1] = '\0';
    return ps_error(api, XLA_FFI_Error_Code_INVALID_ARGUMENT, message);
  }
  return NULL;
}

XLA_FFI_Error* ptychostitch_xla_cpu(XLA_FFI_CallFrame* frame) { return ps_handle(frame, 0); }

XLA_FFI_Error* ptychostitch_xla_cuda(XLA_FFI_CallFrame* frame) { return ps_handle(frame, 1); }
