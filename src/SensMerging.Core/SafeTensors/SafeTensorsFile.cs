using System.Buffers;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.SafeTensors;

/// <summary>
/// An open safetensors file whose header has been fully validated. Tensor bytes are read on demand with positioned
/// reads (<see cref="RandomAccess.Read(SafeFileHandle, Span{byte}, long)"/>) into memory the caller provides, so a
/// reader never holds tensor data itself. Reads are thread-safe.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>The largest span one read call fills; bigger destinations are read in pieces.</summary>
    private const int MaxReadChunk = 1 << 30;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, SafeTensorInfo> _byName;

    private SafeTensorsFile(string path, SafeFileHandle handle, long fileLength, SafeTensorsHeader header)
    {
        Path = path;
        _handle = handle;
        FileLength = fileLength;
        Header = header;
        _byName = header.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The file's length in bytes.</summary>
    public long FileLength { get; }

    /// <summary>The validated header.</summary>
    public SafeTensorsHeader Header { get; }

    /// <summary>Tensors sorted by offset.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors => Header.Tensors;

    /// <summary>The <c>__metadata__</c> entries.</summary>
    public IReadOnlyDictionary<string, string> Metadata => Header.Metadata;

    /// <summary>Absolute file offset where the data buffer starts.</summary>
    public long DataStart => Header.DataStart;

    /// <summary>Opens a file and validates its whole header before any tensor data is read.</summary>
    /// <exception cref="SafeTensorsFormatException">The file breaks the format; the message says how.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = System.IO.Path.GetFullPath(path);
        var handle = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            var length = RandomAccess.GetLength(handle);
            Span<byte> prefix = stackalloc byte[8];
            var got = length >= 8 ? ReadFully(handle, prefix, 0) : 0;
            var n = SafeTensorsHeader.ValidateLength(prefix[..got], length, full);
            var json = ArrayPool<byte>.Shared.Rent((int)n);
            try
            {
                ReadFully(handle, json.AsSpan(0, (int)n), 8);
                var header = SafeTensorsHeader.Parse(json.AsSpan(0, (int)n), length - 8 - n, full);
                return new SafeTensorsFile(full, handle, length, header);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(json);
            }
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The entry for a tensor, or false.</summary>
    public bool TryGetTensor(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SafeTensorInfo? info) =>
        _byName.TryGetValue(name, out info);

    /// <summary>The entry for a tensor; throws <see cref="KeyNotFoundException"/> naming the tensor and file.</summary>
    public SafeTensorInfo GetTensor(string name) =>
        _byName.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");

    /// <summary>Reads a whole tensor's bytes; <paramref name="destination"/> must be exactly its byte length.</summary>
    public void ReadBytes(SafeTensorInfo tensor, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (destination.Length != tensor.ByteLength)
        {
            throw new ArgumentException($"destination holds {destination.Length} bytes, tensor '{tensor.Name}' has {tensor.ByteLength}", nameof(destination));
        }
        ReadBytes(tensor, 0, destination);
    }

    /// <summary>Reads <c>destination.Length</c> bytes of a tensor starting at <paramref name="offsetInTensor"/>.</summary>
    public void ReadBytes(SafeTensorInfo tensor, long offsetInTensor, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (offsetInTensor < 0 || offsetInTensor + destination.Length > tensor.ByteLength)
        {
            throw new ArgumentOutOfRangeException(nameof(offsetInTensor), $"bytes [{offsetInTensor}, {offsetInTensor + destination.Length}) are outside tensor '{tensor.Name}' ({tensor.ByteLength} bytes)");
        }
        var got = ReadFully(_handle, destination, DataStart + tensor.Begin + offsetInTensor);
        if (got != destination.Length)
        {
            throw SafeTensorsFormatException.In(Path, $"file ended while reading tensor '{tensor.Name}' (it was truncated after it was opened)");
        }
    }

    /// <summary>
    /// Reads a range of a tensor's bytes straight into the storage of a contiguous CPU tensor (for example a view of a
    /// pooled buffer): <c>destination.NumberOfElements * ElementSize</c> bytes from <paramref name="offsetInTensor"/>.
    /// </summary>
    public void ReadInto(SafeTensorInfo tensor, long offsetInTensor, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        TensorBytes.ForEachSpan(destination, (span, at) => ReadBytes(tensor, offsetInTensor + at, span));
    }

    /// <summary>Reads a tensor into a new TorchSharp tensor of its dtype and shape (not for hot paths).</summary>
    /// <exception cref="NotSupportedException">The dtype has no TorchSharp equivalent (U16, U32, U64, F8).</exception>
    public Tensor ReadTensor(string name)
    {
        var info = GetTensor(name);
        var result = torch.empty(info.ShapeArray(), info.DType.RequireScalarType());
        try
        {
            ReadInto(info, 0, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    public void Dispose() => _handle.Dispose();

    private static int ReadFully(SafeFileHandle handle, Span<byte> destination, long fileOffset)
    {
        var total = 0;
        while (total < destination.Length)
        {
            var chunk = destination.Slice(total, Math.Min(destination.Length - total, MaxReadChunk));
            var n = RandomAccess.Read(handle, chunk, fileOffset + total);
            if (n == 0)
            {
                break;
            }
            total += n;
        }
        return total;
    }
}
