using System.Text;
using Microsoft.Win32.SafeHandles;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.PyTorch;

/// <summary>
/// One tensor of a PyTorch checkpoint: a view (offset, shape, strides) of a storage, which is a stored zip entry.
/// </summary>
/// <param name="Name">The state-dict key.</param>
/// <param name="DType">Element type (from the storage's type).</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Stride">Strides in elements.</param>
/// <param name="StorageKey">The storage's key (its entry is <c>&lt;archive&gt;/data/&lt;key&gt;</c>).</param>
/// <param name="StorageOffset">The view's first element in the storage.</param>
public sealed record PyTorchTensorInfo(string Name, SafeTensorsDType DType, IReadOnlyList<long> Shape, IReadOnlyList<long> Stride, string StorageKey, long StorageOffset)
{
    /// <summary>Absolute file offset of the storage's first byte.</summary>
    public long StorageDataOffset { get; init; }

    /// <summary>True when the view's elements lie in row-major order without gaps.</summary>
    public bool IsContiguous { get; init; }

    /// <summary>Number of elements.</summary>
    public long ElementCount => TensorShape.ElementCount(Shape);

    /// <summary>Bytes of the tensor's elements (not of its storage).</summary>
    public long ByteLength => ElementCount * DType.Size;
}

/// <summary>
/// A PyTorch checkpoint written by <c>torch.save</c> (the zip format, PyTorch 1.6 and later), opened for lazy reads:
/// the pickle (<c>data.pkl</c>) is decoded by <see cref="RestrictedUnpickler"/>, which understands only the tensor
/// rebuild globals and refuses any other, and every tensor is read later by offset from its storage entry, which
/// PyTorch stores uncompressed. Nothing is loaded whole; reads are thread-safe.
/// </summary>
public sealed class PyTorchCheckpoint : IDisposable
{
    /// <summary>The largest <c>data.pkl</c> accepted (it holds names and shapes only).</summary>
    private const long MaxPickleBytes = 256L << 20;

    private readonly SafeFileHandle _handle;

    private PyTorchCheckpoint(string path, SafeFileHandle handle, IReadOnlyList<PyTorchTensorInfo> tensors)
    {
        Path = path;
        _handle = handle;
        Tensors = tensors;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The state dict's tensors, in its order.</summary>
    public IReadOnlyList<PyTorchTensorInfo> Tensors { get; }

    /// <summary>The globals a checkpoint's pickle may name; any other is refused.</summary>
    public static IReadOnlyList<string> AllowedGlobals => RestrictedUnpickler.AllowedGlobals;

    /// <summary>Opens a checkpoint: reads the zip directory, decodes the pickle and checks every tensor lies inside its storage.</summary>
    /// <exception cref="PyTorchCheckpointException">Not a zip checkpoint, a forbidden global, a malformed archive or pickle, a tensor outside its storage.</exception>
    public static PyTorchCheckpoint Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = System.IO.Path.GetFullPath(path);
        var handle = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            return new PyTorchCheckpoint(full, handle, ReadTensors(handle, full));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Reads <c>destination.Length</c> bytes of a tensor, in row-major order, from <paramref name="offsetInTensor"/> (whole elements).</summary>
    public void ReadBytes(PyTorchTensorInfo tensor, long offsetInTensor, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        var size = tensor.DType.Size;
        if (offsetInTensor < 0 || offsetInTensor + destination.Length > tensor.ByteLength)
        {
            throw new ArgumentOutOfRangeException(nameof(offsetInTensor), $"bytes [{offsetInTensor}, {offsetInTensor + destination.Length}) are outside tensor '{tensor.Name}' ({tensor.ByteLength} bytes)");
        }
        if (tensor.IsContiguous)
        {
            StoredZipArchive.ReadExactly(_handle, destination, tensor.StorageDataOffset + (tensor.StorageOffset * size) + offsetInTensor, Path, $"tensor '{tensor.Name}'");
            return;
        }
        if (offsetInTensor % size != 0 || destination.Length % size != 0)
        {
            throw new ArgumentException($"tensor '{tensor.Name}' is not contiguous in its storage; it is read in whole elements ({size} bytes)", nameof(offsetInTensor));
        }
        var shape = tensor.Shape;
        var stride = tensor.Stride;
        var last = shape.Count - 1;
        var first = offsetInTensor / size;
        var end = first + (destination.Length / size);
        for (var e = first; e < end;)
        {
            var rest = e;
            var position = tensor.StorageOffset;
            for (var d = last; d >= 0; d--)
            {
                position += rest % shape[d] * stride[d];
                rest /= shape[d];
            }
            var run = last >= 0 && stride[last] == 1 ? Math.Min(shape[last] - (e % shape[last]), end - e) : 1;
            StoredZipArchive.ReadExactly(_handle, destination.Slice((int)((e - first) * size), (int)(run * size)),
                tensor.StorageDataOffset + (position * size), Path, $"tensor '{tensor.Name}'");
            e += run;
        }
    }

    public void Dispose() => _handle.Dispose();

    private static List<PyTorchTensorInfo> ReadTensors(SafeFileHandle handle, string path)
    {
        if (!StoredZipArchive.LooksLikeZip(handle))
        {
            Span<byte> first = stackalloc byte[2];
            var legacy = RandomAccess.Read(handle, first, 0) == 2 && first[0] == 0x80;
            throw PyTorchCheckpointException.In(path, legacy
                ? "a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format, which is not supported; re-save it with a recent torch.save or convert it to safetensors"
                : "not a PyTorch checkpoint (it is not a zip archive)");
        }
        var entries = StoredZipArchive.ReadEntries(handle, path);
        var pickles = entries.Keys.Where(n => n.EndsWith("/data.pkl", StringComparison.Ordinal) && n.IndexOf('/', StringComparison.Ordinal) == n.Length - "/data.pkl".Length).ToList();
        if (pickles.Count != 1)
        {
            throw PyTorchCheckpointException.In(path, pickles.Count == 0
                ? "the zip archive has no '<name>/data.pkl' entry (not a torch.save checkpoint)"
                : $"the zip archive has {pickles.Count} data.pkl entries ({string.Join(", ", pickles)})");
        }
        var prefix = pickles[0][..^"data.pkl".Length];
        if (entries.TryGetValue(prefix + "byteorder", out var byteOrder))
        {
            var text = Encoding.ASCII.GetString(ReadEntry(handle, path, byteOrder, 16)).Trim();
            if (text != "little")
            {
                throw PyTorchCheckpointException.In(path, $"the checkpoint's byte order is '{text}'; only little-endian checkpoints are supported");
            }
        }
        var pickle = ReadEntry(handle, path, entries[pickles[0]], MaxPickleBytes);
        var root = RestrictedUnpickler.Load(pickle, $"{path}: {pickles[0]}");
        if (root is not PickledDict dict)
        {
            throw PyTorchCheckpointException.In(path, $"the checkpoint holds {(root is null ? "None" : root.GetType().Name)}, not a state dict (a dict of tensors)");
        }
        var tensors = new List<PyTorchTensorInfo>(dict.Items.Count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, value) in dict.Items)
        {
            if (key is not string name)
            {
                throw PyTorchCheckpointException.In(path, $"the state dict has a key that is not a string ({key ?? "None"})");
            }
            if (value is not PickledTensor t)
            {
                throw PyTorchCheckpointException.In(path, $"state dict entry '{name}' is not a tensor (nested or non-tensor entries are not supported)");
            }
            if (!names.Add(name))
            {
                throw PyTorchCheckpointException.In(path, $"the state dict lists '{name}' twice");
            }
            tensors.Add(Describe(path, name, t, entries, prefix));
        }
        return tensors;
    }

    private static PyTorchTensorInfo Describe(string path, string name, PickledTensor t, Dictionary<string, ZipEntryLocation> entries, string prefix)
    {
        var entryName = prefix + "data/" + t.Storage.Key;
        if (!entries.TryGetValue(entryName, out var entry))
        {
            throw PyTorchCheckpointException.In(path, $"tensor '{name}': its storage '{entryName}' is missing from the archive");
        }
        if (entry.Method != 0)
        {
            throw PyTorchCheckpointException.In(path, $"tensor '{name}': its storage '{entryName}' is compressed (method {entry.Method}); PyTorch stores storages uncompressed");
        }
        var size = t.Storage.DType.Size;
        var storageElements = entry.Size / size;
        long count;
        long lastElement;
        try
        {
            count = TensorShape.ElementCount(t.Shape);
            lastElement = t.StorageOffset;
            for (var d = 0; d < t.Shape.Length; d++)
            {
                lastElement = checked(lastElement + ((t.Shape[d] - 1) * t.Stride[d]));
            }
        }
        catch (OverflowException)
        {
            throw PyTorchCheckpointException.In(path, $"tensor '{name}': shape {TensorShape.Format(t.Shape)} overflows");
        }
        if (count > 0 && lastElement >= storageElements)
        {
            throw PyTorchCheckpointException.In(path,
                $"tensor '{name}' (offset {t.StorageOffset}, shape {TensorShape.Format(t.Shape)}, stride {TensorShape.Format(t.Stride)}) reaches element {lastElement} of a storage of {storageElements} {t.Storage.DType} elements");
        }
        return new PyTorchTensorInfo(name, t.Storage.DType, t.Shape, t.Stride, t.Storage.Key, t.StorageOffset)
        {
            StorageDataOffset = entry.DataOffset,
            IsContiguous = IsRowMajor(t.Shape, t.Stride),
        };
    }

    private static bool IsRowMajor(long[] shape, long[] stride)
    {
        long expected = 1;
        for (var d = shape.Length - 1; d >= 0; d--)
        {
            if (shape[d] != 1 && stride[d] != expected)
            {
                return shape.Any(s => s == 0);
            }
            expected *= shape[d];
        }
        return true;
    }

    private static byte[] ReadEntry(SafeFileHandle handle, string path, ZipEntryLocation entry, long maxBytes)
    {
        if (entry.Method != 0)
        {
            throw PyTorchCheckpointException.In(path, $"zip entry '{entry.Name}' is compressed (method {entry.Method}); PyTorch stores its entries uncompressed");
        }
        if (entry.Size > maxBytes)
        {
            throw PyTorchCheckpointException.In(path, $"zip entry '{entry.Name}' has {entry.Size} bytes, more than the {maxBytes} accepted");
        }
        var bytes = new byte[entry.Size];
        StoredZipArchive.ReadExactly(handle, bytes, entry.DataOffset, path, $"zip entry '{entry.Name}'");
        return bytes;
    }
}
