using System.Text;

namespace SensMerging.Core.Engine;

/// <summary>
/// Seeds derived from (run seed, tensor name, block index) with a fixed hash (FNV-1a then SplitMix64 mixing), so they
/// are the same on every run, process and machine (unlike <see cref="string.GetHashCode()"/>).
/// </summary>
public static class StableSeed
{
    /// <summary>A non-negative seed for one tensor block.</summary>
    public static long Derive(long runSeed, string tensorName, long blockIndex)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        var h = Mix((ulong)runSeed ^ Fnv1a(tensorName));
        h = Mix(h ^ (ulong)blockIndex);
        return (long)(h & long.MaxValue);
    }

    /// <summary>64-bit FNV-1a of the UTF-8 bytes.</summary>
    public static ulong Fnv1a(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var h = 14695981039346656037UL;
        Span<byte> buffer = stackalloc byte[256];
        var bytes = Encoding.UTF8.GetByteCount(text) <= buffer.Length ? buffer[..Encoding.UTF8.GetBytes(text, buffer)] : Encoding.UTF8.GetBytes(text);
        foreach (var b in bytes)
        {
            h = (h ^ b) * 1099511628211UL;
        }
        return h;
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
