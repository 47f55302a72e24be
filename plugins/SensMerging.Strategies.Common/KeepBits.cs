using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace SensMerging.Strategies.Common;

/// <summary>
/// One model's DARE keep mask over a whole tensor as bits (the element at row-major position p is bit p), written by the
/// statistics pass that draws it from the counter stream and read by the merge pass, so each element's draw is computed
/// once instead of in both passes. Holds (elements + 7) / 8 bytes (plus a few of padding) from the shared pool (arrays
/// allocated uninitialized and kept, so a merge's later sessions reuse the pages the first ones touched), pinned while held;
/// written and read at any position, so block boundaries need no alignment. Not thread-safe: a session's calls come from
/// one thread.
/// </summary>
internal sealed unsafe class KeepBits : IDisposable
{
    /// <summary>The most bits one call writes or reads (a 16-lane vector's).</summary>
    public const int MaxRun = 16;

    private byte[]? _array;
    private GCHandle _pin;
    private byte* _bits;

    /// <param name="elements">The tensor's element count (at most <see cref="MaxElements"/>).</param>
    public KeepBits(long elements)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elements);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elements, MaxElements);
        // Four bytes past the last bit's byte: a run is read and written as one unaligned 32-bit word.
        _array = ArrayPool<byte>.Shared.Rent((int)((elements + 7) / 8) + sizeof(uint));
        _pin = GCHandle.Alloc(_array, GCHandleType.Pinned);
        _bits = (byte*)_pin.AddrOfPinnedObject();
    }

    /// <summary>A mask for a tensor of <paramref name="elements"/>, or null past <see cref="MaxElements"/> (the draws are then made again where needed).</summary>
    public static KeepBits? ForTensor(long elements) => elements <= MaxElements ? new KeepBits(elements) : null;

    /// <summary>The largest tensor a mask holds (one pooled array of at most 2^30 bytes).</summary>
    public static long MaxElements => ((1L << 30) - sizeof(uint)) * 8;

    /// <summary>The bits' first byte, valid until <see cref="Dispose"/>; for <see cref="Read(byte*, long, int)"/> in a vector loop.</summary>
    public byte* Pointer => _bits != null ? _bits : throw new ObjectDisposedException(nameof(KeepBits));

    /// <summary>Sets the <paramref name="count"/> (1 to <see cref="MaxRun"/>) bits from <paramref name="position"/> to the low bits of <paramref name="bits"/> (bit k for position + k).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(long position, uint bits, int count)
    {
        var at = Pointer + (position >> 3);
        var shift = (int)(position & 7);
        var mask = ((1u << count) - 1) << shift;
        Unsafe.WriteUnaligned(at, (Unsafe.ReadUnaligned<uint>(at) & ~mask) | ((bits << shift) & mask));
    }

    /// <summary>The <paramref name="count"/> (1 to <see cref="MaxRun"/>) bits from <paramref name="position"/>, bit k for position + k.</summary>
    public uint Read(long position, int count) => Read(Pointer, position, count);

    /// <summary>The <paramref name="count"/> (1 to <see cref="MaxRun"/>) bits from <paramref name="position"/> of the mask at <paramref name="bits"/>, bit k for position + k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Read(byte* bits, long position, int count) =>
        (Unsafe.ReadUnaligned<uint>(bits + (position >> 3)) >> (int)(position & 7)) & ((1u << count) - 1);

    public void Dispose()
    {
        if (_array is null)
        {
            return;
        }
        _pin.Free();
        ArrayPool<byte>.Shared.Return(_array);
        _array = null;
        _bits = null;
    }
}
