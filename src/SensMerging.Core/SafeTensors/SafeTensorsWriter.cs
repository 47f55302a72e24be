using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace SensMerging.Core.SafeTensors;

/// <summary>A tensor the writer will write: planned up front so the header is final before any data.</summary>
public sealed record TensorPlanEntry(string Name, SafeTensorsDType DType, IReadOnlyList<long> Shape)
{
    /// <summary>Bytes of the tensor's data.</summary>
    public long ByteLength => checked(TensorShape.ElementCount(Shape) * DType.Size);
}

/// <summary>A finished output file.</summary>
/// <param name="Path">Full path.</param>
/// <param name="Size">Bytes.</param>
/// <param name="Sha256">Lower-case hex SHA-256 of the content (empty when hashing was off).</param>
public sealed record WrittenFile(string Path, long Size, string Sha256);

/// <summary>
/// Writes one safetensors file: the header (with <c>__metadata__</c>, space-padded so the data starts 8-byte aligned)
/// is written first from the plan, then the tensors' bytes are streamed in plan order, in as many pieces as the caller
/// likes. The SHA-256 of the file is computed while writing.
/// </summary>
public sealed class SafeTensorsWriter : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly IReadOnlyList<TensorPlanEntry> _plan;
    private readonly IncrementalHash? _hash;
    private readonly long _dataStart;
    private readonly long _dataLength;
    private int _current;
    private long _offsetInCurrent;
    private long _written;
    private WrittenFile? _result;

    /// <summary>Creates the file (it must not exist) and writes the header.</summary>
    public SafeTensorsWriter(string path, IReadOnlyList<TensorPlanEntry> plan, IReadOnlyDictionary<string, string>? metadata = null, bool computeSha256 = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(plan);
        Path = System.IO.Path.GetFullPath(path);
        _plan = plan;
        var header = BuildHeader(plan, metadata);
        _dataStart = header.Length;
        _dataLength = plan.Sum(p => p.ByteLength);
        _hash = computeSha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        _handle = File.OpenHandle(Path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        try
        {
            Append(header);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>Total bytes the file will have.</summary>
    public long FileLength => _dataStart + _dataLength;

    /// <summary>True when every planned byte has been written.</summary>
    public bool IsComplete => _plan.Skip(_current).All(p => p.ByteLength == 0) && _offsetInCurrent == 0;

    /// <summary>
    /// The header bytes for a plan: 8-byte little-endian length, JSON (tensors in plan order, contiguous offsets, and
    /// <c>__metadata__</c> first), padded with spaces so the total is a multiple of 8.
    /// </summary>
    public static byte[] BuildHeader(IReadOnlyList<TensorPlanEntry> plan, IReadOnlyDictionary<string, string>? metadata)
    {
        ArgumentNullException.ThrowIfNull(plan);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(SafeTensorsHeader.MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    json.WriteString(key, value);
                }
                json.WriteEndObject();
            }
            var names = new HashSet<string>(StringComparer.Ordinal);
            long offset = 0;
            foreach (var t in plan)
            {
                if (t.Name == SafeTensorsHeader.MetadataKey || !names.Add(t.Name))
                {
                    throw new ArgumentException($"tensor name '{t.Name}' is reserved or appears twice in the plan", nameof(plan));
                }
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType.Name);
                json.WriteStartArray("shape");
                foreach (var d in t.Shape)
                {
                    json.WriteNumberValue(d);
                }
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += t.ByteLength;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var jsonLength = (int)buffer.Length;
        var padded = (jsonLength + 8 + 7) / 8 * 8 - 8;
        var header = new byte[8 + padded];
        BitConverter.TryWriteBytes(header.AsSpan(0, 8), (ulong)padded);
        buffer.GetBuffer().AsSpan(0, jsonLength).CopyTo(header.AsSpan(8));
        header.AsSpan(8 + jsonLength).Fill((byte)' ');
        return header;
    }

    /// <summary>Writes a whole tensor; it must be the next one in the plan.</summary>
    public void WriteTensor(string name, ReadOnlySpan<byte> bytes)
    {
        var expected = NextEntry(name);
        if (_offsetInCurrent != 0 || bytes.Length != expected.ByteLength)
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' needs {expected.ByteLength} bytes from its start, got {bytes.Length} at offset {_offsetInCurrent}");
        }
        WriteChunk(name, 0, bytes);
    }

    /// <summary>
    /// Writes the next piece of tensor <paramref name="name"/>; <paramref name="offsetInTensor"/> must be where the previous
    /// piece ended (the writer checks, so a misordered engine fails loudly instead of writing a wrong file).
    /// </summary>
    public void WriteChunk(string name, long offsetInTensor, ReadOnlySpan<byte> bytes)
    {
        var entry = NextEntry(name);
        if (offsetInTensor != _offsetInCurrent)
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' piece at offset {offsetInTensor}, expected {_offsetInCurrent}");
        }
        if (_offsetInCurrent + bytes.Length > entry.ByteLength)
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' piece ends at {_offsetInCurrent + bytes.Length}, past its {entry.ByteLength} bytes");
        }
        Append(bytes);
        _offsetInCurrent += bytes.Length;
        if (_offsetInCurrent == entry.ByteLength)
        {
            _current++;
            _offsetInCurrent = 0;
        }
    }

    /// <summary>Checks every planned byte was written, flushes, closes, and returns the file's size and hash.</summary>
    public WrittenFile Complete()
    {
        if (_result is not null)
        {
            return _result;
        }
        if (!IsComplete)
        {
            throw new InvalidOperationException($"{Path}: not complete, tensor '{_plan[_current].Name}' has {_offsetInCurrent} of {_plan[_current].ByteLength} bytes");
        }
        RandomAccess.FlushToDisk(_handle);
        _handle.Dispose();
        var hex = _hash is null ? string.Empty : Convert.ToHexStringLower(_hash.GetHashAndReset());
        _result = new WrittenFile(Path, _written, hex);
        return _result;
    }

    public void Dispose()
    {
        _handle.Dispose();
        _hash?.Dispose();
    }

    private TensorPlanEntry NextEntry(string name)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (_current >= _plan.Count)
        {
            throw new InvalidOperationException($"{Path}: every planned tensor is written; got more bytes for '{name}'");
        }
        // Empty tensors have no bytes to write; callers may skip them.
        while (_offsetInCurrent == 0 && _current < _plan.Count - 1 && _plan[_current].ByteLength == 0 && _plan[_current].Name != name)
        {
            _current++;
        }
        var entry = _plan[_current];
        return entry.Name == name
            ? entry
            : throw new InvalidOperationException($"{Path}: expected bytes of tensor '{entry.Name}', got '{name}'");
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        RandomAccess.Write(_handle, bytes, _written);
        _hash?.AppendData(bytes);
        _written += bytes.Length;
    }
}
