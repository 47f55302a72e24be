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
/// is written first from the plan, then the tensors' bytes, in as many pieces as the caller likes: in plan order
/// (<see cref="WriteChunk"/>, which checks the order) or in any order at their known place (<see cref="WriteAt"/>, which
/// checks that no byte is written twice). The SHA-256 of the file follows the contiguous written prefix: pieces written
/// at that frontier are hashed from the caller's span, pieces written ahead of it are read back from the file (the page
/// cache) and hashed once the frontier reaches them, so the hash is that of the final file in either mode.
/// </summary>
public sealed class SafeTensorsWriter : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly IReadOnlyList<TensorPlanEntry> _plan;
    private readonly IncrementalHash? _hash;
    private readonly long _dataStart;
    private readonly long _dataLength;
    private readonly Dictionary<string, (long Start, TensorPlanEntry Entry)> _entries;
    private readonly List<(long Start, long End)> _ahead = [];
    private int _current;
    private long _offsetInCurrent;
    private long _frontier;
    private bool _positioned;
    private byte[]? _readBack;
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
        _entries = new Dictionary<string, (long, TensorPlanEntry)>(plan.Count, StringComparer.Ordinal);
        long start = _dataStart;
        foreach (var entry in plan)
        {
            _entries[entry.Name] = (start, entry);
            start += entry.ByteLength;
        }
        _hash = computeSha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        // Read access too: pieces written ahead of the hash frontier are read back to be hashed in file order.
        _handle = File.OpenHandle(Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        try
        {
            Put(header, 0);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>Stopwatch ticks spent hashing (including reading back pieces written ahead of the frontier).</summary>
    public long HashTicks { get; private set; }

    /// <summary>Bytes read back from the file to be hashed.</summary>
    public long ReadBackBytes { get; private set; }

    /// <summary>Total bytes the file will have.</summary>
    public long FileLength => _dataStart + _dataLength;

    /// <summary>True when every planned byte has been written.</summary>
    public bool IsComplete => _frontier == FileLength;

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
        if (_positioned)
        {
            throw new InvalidOperationException($"{Path}: pieces were already written at their offsets (WriteAt); WriteChunk cannot follow them");
        }
        var entry = NextEntry(name);
        if (offsetInTensor != _offsetInCurrent)
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' piece at offset {offsetInTensor}, expected {_offsetInCurrent}");
        }
        if (_offsetInCurrent + bytes.Length > entry.ByteLength)
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' piece ends at {_offsetInCurrent + bytes.Length}, past its {entry.ByteLength} bytes");
        }
        Put(bytes, _frontier);
        _offsetInCurrent += bytes.Length;
        if (_offsetInCurrent == entry.ByteLength)
        {
            _current++;
            _offsetInCurrent = 0;
        }
    }

    /// <summary>
    /// Writes a piece of tensor <paramref name="name"/> at its place in the file, in any order relative to other pieces.
    /// Each byte may be written once: a piece that overlaps one already written, or runs past its tensor, fails.
    /// </summary>
    public void WriteAt(string name, long offsetInTensor, ReadOnlySpan<byte> bytes)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (!_entries.TryGetValue(name, out var tensor))
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' is not in this file's plan");
        }
        if (offsetInTensor < 0 || offsetInTensor + bytes.Length > tensor.Entry.ByteLength)
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' piece [{offsetInTensor}, {offsetInTensor + bytes.Length}) is outside its {tensor.Entry.ByteLength} bytes");
        }
        _positioned = true;
        if (bytes.IsEmpty)
        {
            return;
        }
        var start = tensor.Start + offsetInTensor;
        var end = start + bytes.Length;
        if (start < _frontier || Overlaps(start, end, out _))
        {
            throw new InvalidOperationException($"{Path}: tensor '{name}' piece [{offsetInTensor}, {offsetInTensor + bytes.Length}) overlaps bytes already written");
        }
        Put(bytes, start);
    }

    /// <summary>
    /// True when a piece of <paramref name="name"/> starting at <paramref name="offsetInTensor"/> would start at the hash
    /// frontier (it would be hashed from the caller's span, with no read-back).
    /// </summary>
    public bool IsAtFrontier(string name, long offsetInTensor) =>
        _entries.TryGetValue(name, out var tensor) && tensor.Start + offsetInTensor == _frontier;

    /// <summary>Checks every planned byte was written, flushes, closes, and returns the file's size and hash.</summary>
    public WrittenFile Complete()
    {
        if (_result is not null)
        {
            return _result;
        }
        if (!IsComplete)
        {
            var (start, entry) = _entries.Values.First(e => e.Start + e.Entry.ByteLength > _frontier);
            throw new InvalidOperationException($"{Path}: not complete, tensor '{entry.Name}' has its first {_frontier - start} of {entry.ByteLength} bytes written"
                + (_ahead.Count > 0 ? $" ({_ahead.Sum(r => r.End - r.Start)} bytes written further on)" : string.Empty));
        }
        RandomAccess.FlushToDisk(_handle);
        _handle.Dispose();
        var hex = _hash is null ? string.Empty : Convert.ToHexStringLower(_hash.GetHashAndReset());
        _result = new WrittenFile(Path, _frontier, hex);
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

    /// <summary>
    /// Writes bytes at a file offset checked to be free, then advances the hash frontier: a piece at the frontier is hashed
    /// from the span, followed by the (coalesced) range written ahead that it now joins, read back from the file.
    /// </summary>
    private void Put(ReadOnlySpan<byte> bytes, long start)
    {
        RandomAccess.Write(_handle, bytes, start);
        var end = start + bytes.Length;
        if (start != _frontier)
        {
            AddAhead(start, end);
            return;
        }
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        _hash?.AppendData(bytes);
        _frontier = end;
        if (_ahead.Count > 0 && _ahead[0].Start == _frontier)
        {
            var (from, to) = _ahead[0];
            _ahead.RemoveAt(0);
            HashFromFile(from, to);
            _frontier = to;
        }
        HashTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
    }

    private void HashFromFile(long from, long to)
    {
        if (_hash is null)
        {
            return;
        }
        _readBack ??= GC.AllocateUninitializedArray<byte>(1 << 20);
        for (var at = from; at < to;)
        {
            var piece = _readBack.AsSpan(0, (int)Math.Min(_readBack.Length, to - at));
            var read = RandomAccess.Read(_handle, piece, at);
            if (read <= 0)
            {
                throw new IOException($"{Path}: reading back bytes [{at}, {to}) to hash them returned end of file");
            }
            _hash.AppendData(piece[..read]);
            ReadBackBytes += read;
            at += read;
        }
    }

    /// <summary>Index of the first range ahead whose end is past <paramref name="start"/>; true when it begins before <paramref name="end"/>.</summary>
    private bool Overlaps(long start, long end, out int index)
    {
        var (lo, hi) = (0, _ahead.Count);
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_ahead[mid].End <= start)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        index = lo;
        return lo < _ahead.Count && _ahead[lo].Start < end;
    }

    /// <summary>Records a range written ahead of the frontier, merged with the ranges it touches so the list stays short.</summary>
    private void AddAhead(long start, long end)
    {
        Overlaps(start, end, out var index);
        if (index > 0 && _ahead[index - 1].End == start)
        {
            index--;
            start = _ahead[index].Start;
            _ahead.RemoveAt(index);
        }
        if (index < _ahead.Count && _ahead[index].Start == end)
        {
            end = _ahead[index].End;
            _ahead.RemoveAt(index);
        }
        _ahead.Insert(index, (start, end));
    }
}
