using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>Raw access to the memory of contiguous CPU tensors (valid while the tensor lives; libtorch never moves it).</summary>
internal static unsafe class NativeSpans
{

    /// <summary>The address of the first element of a contiguous CPU tensor with at least one element.</summary>
    public static void* Address(Tensor tensor)
    {
        using var flat = tensor.reshape(-1);
        using var first = flat.narrow(0, 0, 1);
        return Unsafe.AsPointer(ref MemoryMarshal.GetReference(first.bytes));
    }

    /// <summary><see cref="Address"/> of a float32 tensor.</summary>
    public static float* Float32(Tensor tensor) => (float*)Address(tensor);
}
