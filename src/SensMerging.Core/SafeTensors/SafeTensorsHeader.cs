using System.Text.Json;

namespace SensMerging.Core.SafeTensors;

/// <summary>A parsed and fully validated safetensors header.</summary>
public sealed class SafeTensorsHeader
{
    /// <summary>The largest header the official clients accept (bytes of JSON).</summary>
    public const long MaxHeaderLength = 25_000_000;

    /// <summary>The key that holds free-form string metadata.</summary>
    public const string MetadataKey = "__metadata__";

    private SafeTensorsHeader(IReadOnlyList<SafeTensorInfo> tensors, IReadOnlyDictionary<string, string> metadata, long headerLength)
    {
        Tensors = tensors;
        Metadata = metadata;
        HeaderLength = headerLength;
    }

    /// <summary>Tensors sorted by offset.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }

    /// <summary>The <c>__metadata__</c> entries (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>N: the JSON length in bytes (data starts at 8 + N).</summary>
    public long HeaderLength { get; }

    /// <summary>Offset in the file of the data buffer.</summary>
    public long DataStart => 8 + HeaderLength;

    /// <summary>
    /// Checks the 8-byte length prefix against the bounds; returns N. <paramref name="fileLength"/> is the file's size.
    /// </summary>
    public static long ValidateLength(ReadOnlySpan<byte> prefix, long fileLength, string path)
    {
        if (fileLength < 8 || prefix.Length < 8)
        {
            throw SafeTensorsFormatException.In(path, $"file is {fileLength} bytes, shorter than the 8-byte header length prefix");
        }
        var n = BitConverter.ToUInt64(prefix[..8]);
        if (!BitConverter.IsLittleEndian)
        {
            n = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(n);
        }
        if (n > MaxHeaderLength)
        {
            throw SafeTensorsFormatException.In(path, $"header length {n} exceeds the limit of {MaxHeaderLength} bytes");
        }
        if ((long)n > fileLength - 8)
        {
            throw SafeTensorsFormatException.In(path, $"header length {n} exceeds the {fileLength - 8} bytes that follow the length prefix");
        }
        if (n < 2)
        {
            throw SafeTensorsFormatException.In(path, $"header length {n} is too small for a JSON object");
        }
        return (long)n;
    }

    /// <summary>
    /// Parses and validates the JSON header: object shape, dtypes, shapes, offsets (sorted, contiguous from 0, no holes or
    /// overlaps, sizes equal element count times dtype size), duplicate names, and that the data buffer ends exactly at
    /// <paramref name="bufferLength"/> (file length - 8 - N).
    /// </summary>
    public static SafeTensorsHeader Parse(ReadOnlySpan<byte> json, long bufferLength, string path)
    {
        if (json.IsEmpty || json[0] != (byte)'{')
        {
            throw SafeTensorsFormatException.In(path, "header does not start with '{'");
        }
        List<SafeTensorInfo> tensors;
        Dictionary<string, string> metadata;
        try
        {
            (tensors, metadata) = ParseJson(json, path);
        }
        catch (JsonException ex)
        {
            throw SafeTensorsFormatException.In(path, $"header is not valid JSON: {ex.Message}", ex);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            throw SafeTensorsFormatException.In(path, $"header is not valid UTF-8 JSON: {ex.Message}", ex);
        }
        tensors.Sort(static (a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expected = 0;
        foreach (var t in tensors)
        {
            if (t.Begin > expected)
            {
                throw SafeTensorsFormatException.In(path, $"hole in the data buffer: bytes {expected}..{t.Begin} belong to no tensor (next tensor '{t.Name}')");
            }
            if (t.Begin < expected)
            {
                throw SafeTensorsFormatException.In(path, $"tensor '{t.Name}' at offsets [{t.Begin}, {t.End}] overlaps the previous tensor, which ends at {expected}");
            }
            long elements;
            try
            {
                elements = t.ElementCount;
                var size = checked(elements * t.DType.Size);
                if (t.End - t.Begin != size)
                {
                    throw SafeTensorsFormatException.In(path, $"tensor '{t.Name}' has {t.End - t.Begin} bytes (offsets [{t.Begin}, {t.End}]) but shape {TensorShape.Format(t.Shape)} of {t.DType} needs {size}");
                }
            }
            catch (OverflowException ex)
            {
                throw SafeTensorsFormatException.In(path, $"tensor '{t.Name}' shape {TensorShape.Format(t.Shape)} is too large", ex);
            }
            expected = t.End;
        }
        if (expected != bufferLength)
        {
            throw SafeTensorsFormatException.In(path, $"file length mismatch: tensors end at byte {expected} of the data buffer, but the file holds {bufferLength} data bytes (8 + N + buffer end must equal the file length)");
        }
        return new SafeTensorsHeader(tensors, metadata, json.Length);
    }

    private static (List<SafeTensorInfo> Tensors, Dictionary<string, string> Metadata) ParseJson(ReadOnlySpan<byte> json, string path)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 8 });
        var tensors = new List<SafeTensorInfo>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var names = new HashSet<string>(StringComparer.Ordinal);
        var sawMetadata = false;
        Expect(ref reader, JsonTokenType.StartObject, path, "the header");
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                break;
            }
            var name = reader.GetString()!;
            if (name == MetadataKey)
            {
                if (sawMetadata)
                {
                    throw SafeTensorsFormatException.In(path, $"duplicate key '{MetadataKey}'");
                }
                sawMetadata = true;
                ReadMetadata(ref reader, metadata, path);
                continue;
            }
            if (!names.Add(name))
            {
                throw SafeTensorsFormatException.In(path, $"duplicate tensor name '{name}'");
            }
            tensors.Add(ReadEntry(ref reader, name, path));
        }
        if (reader.Read())
        {
            throw SafeTensorsFormatException.In(path, $"unexpected content after the header object at byte {reader.TokenStartIndex}");
        }
        return (tensors, metadata);
    }

    private static void ReadMetadata(ref Utf8JsonReader reader, Dictionary<string, string> metadata, string path)
    {
        Expect(ref reader, JsonTokenType.StartObject, path, $"'{MetadataKey}'");
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                return;
            }
            var key = reader.GetString()!;
            Next(ref reader, path);
            if (reader.TokenType != JsonTokenType.String)
            {
                throw SafeTensorsFormatException.In(path, $"'{MetadataKey}' value of '{key}' is {reader.TokenType}, expected a string");
            }
            if (!metadata.TryAdd(key, reader.GetString()!))
            {
                throw SafeTensorsFormatException.In(path, $"duplicate key '{key}' in '{MetadataKey}'");
            }
        }
    }

    private static SafeTensorInfo ReadEntry(ref Utf8JsonReader reader, string name, string path)
    {
        Expect(ref reader, JsonTokenType.StartObject, path, $"tensor '{name}'");
        SafeTensorsDType? dtype = null;
        List<long>? shape = null;
        List<long>? offsets = null;
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                break;
            }
            var key = reader.GetString()!;
            switch (key)
            {
                case "dtype":
                    if (dtype is not null)
                    {
                        throw SafeTensorsFormatException.In(path, $"tensor '{name}' has a duplicate 'dtype'");
                    }
                    Expect(ref reader, JsonTokenType.String, path, $"'dtype' of tensor '{name}'");
                    var text = reader.GetString()!;
                    dtype = SafeTensorsDType.FromHeaderName(text)
                        ?? throw SafeTensorsFormatException.In(path, $"tensor '{name}' has unknown dtype '{text}'");
                    break;
                case "shape":
                    if (shape is not null)
                    {
                        throw SafeTensorsFormatException.In(path, $"tensor '{name}' has a duplicate 'shape'");
                    }
                    shape = ReadLongArray(ref reader, path, $"'shape' of tensor '{name}'");
                    break;
                case "data_offsets":
                    if (offsets is not null)
                    {
                        throw SafeTensorsFormatException.In(path, $"tensor '{name}' has a duplicate 'data_offsets'");
                    }
                    offsets = ReadLongArray(ref reader, path, $"'data_offsets' of tensor '{name}'");
                    if (offsets.Count != 2)
                    {
                        throw SafeTensorsFormatException.In(path, $"'data_offsets' of tensor '{name}' has {offsets.Count} values, expected [begin, end]");
                    }
                    if (offsets[1] < offsets[0])
                    {
                        throw SafeTensorsFormatException.In(path, $"'data_offsets' of tensor '{name}' end {offsets[1]} is before begin {offsets[0]}");
                    }
                    break;
                default:
                    // Unknown keys are ignored, as the reference implementation does.
                    reader.Skip();
                    break;
            }
        }
        if (dtype is null || shape is null || offsets is null)
        {
            var missing = dtype is null ? "dtype" : shape is null ? "shape" : "data_offsets";
            throw SafeTensorsFormatException.In(path, $"tensor '{name}' has no '{missing}'");
        }
        return new SafeTensorInfo(name, dtype, shape, offsets[0], offsets[1]);
    }

    private static List<long> ReadLongArray(ref Utf8JsonReader reader, string path, string what)
    {
        Expect(ref reader, JsonTokenType.StartArray, path, what);
        var values = new List<long>(4);
        while (true)
        {
            Next(ref reader, path);
            if (reader.TokenType == JsonTokenType.EndArray)
            {
                return values;
            }
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var v) || v < 0)
            {
                var shown = reader.TokenType == JsonTokenType.Number
                    ? System.Text.Encoding.UTF8.GetString(reader.ValueSpan)
                    : reader.TokenType.ToString();
                throw SafeTensorsFormatException.In(path, $"{what} holds {shown}, expected non-negative integers");
            }
            values.Add(v);
        }
    }

    private static void Next(ref Utf8JsonReader reader, string path)
    {
        if (!reader.Read())
        {
            throw SafeTensorsFormatException.In(path, "header JSON ends early");
        }
    }

    private static void Expect(ref Utf8JsonReader reader, JsonTokenType type, string path, string what)
    {
        Next(ref reader, path);
        if (reader.TokenType != type)
        {
            throw SafeTensorsFormatException.In(path, $"{what} is {reader.TokenType}, expected {type}");
        }
    }
}
