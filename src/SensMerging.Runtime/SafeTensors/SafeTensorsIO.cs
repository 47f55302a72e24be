using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Runtime.SafeTensors;

/// <summary>One tensor's entry in a safetensors header.</summary>
internal sealed record SafeTensorEntry(string Name, string Dtype, long[] Shape, long Begin, long End);

/// <summary>
/// Minimal safetensors reader for the runtime (header JSON + positioned reads straight into tensor memory).
/// To be unified with the project's reader in SensMerging.Core.SafeTensors later.
/// </summary>
internal sealed class SafeTensorsFile : IDisposable
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;
    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;

    private SafeTensorsFile(string path, SafeFileHandle handle, long dataStart, IReadOnlyDictionary<string, SafeTensorEntry> entries)
    {
        Path = path;
        _handle = handle;
        _dataStart = dataStart;
        Entries = entries;
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Safetensors file not found: {path}", path);
        }
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            var length = RandomAccess.GetLength(handle);
            Span<byte> prefix = stackalloc byte[8];
            if (length < 8 || RandomAccess.Read(handle, prefix, 0) != 8)
            {
                throw new InvalidDataException($"{path} is too short to be a safetensors file.");
            }
            var headerLength = BinaryPrimitives.ReadInt64LittleEndian(prefix);
            if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > length)
            {
                throw new InvalidDataException($"{path}: safetensors header length {headerLength} is invalid for a file of {length} bytes.");
            }
            var header = new byte[headerLength];
            ReadExactly(handle, header, 8, path);
            var entries = ParseHeader(header, path, length - 8 - headerLength);
            return new SafeTensorsFile(path, handle, 8 + headerLength, entries);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Reads a tensor into a new CPU tensor of its stored dtype.</summary>
    public Tensor Read(string name, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (!Entries.TryGetValue(name, out var entry))
        {
            throw new KeyNotFoundException($"{Path} has no tensor '{name}'.");
        }
        var tensor = empty(entry.Shape, dtype: ToScalarType(entry.Dtype, Path, name));
        try
        {
            var bytes = tensor.bytes;
            if (bytes.Length != entry.End - entry.Begin)
            {
                throw new InvalidDataException($"{Path}: tensor '{name}' has {entry.End - entry.Begin} bytes but its shape and dtype need {bytes.Length}.");
            }
            ReadExactly(_handle, bytes, _dataStart + entry.Begin, Path);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    public void Dispose() => _handle.Dispose();

    internal static ScalarType ToScalarType(string dtype, string path, string name) => dtype switch
    {
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "F64" => ScalarType.Float64,
        _ => throw new InvalidDataException($"{path}: tensor '{name}' has dtype {dtype}; the runtime reads F32, F16, BF16 and F64."),
    };

    internal static (string Name, int Size) FromScalarType(ScalarType type) => type switch
    {
        ScalarType.Float32 => ("F32", 4),
        ScalarType.Float16 => ("F16", 2),
        ScalarType.BFloat16 => ("BF16", 2),
        ScalarType.Float64 => ("F64", 8),
        _ => throw new NotSupportedException($"Cannot write dtype {type} to safetensors (F32, F16, BF16, F64 only)."),
    };

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        var done = 0;
        while (done < buffer.Length)
        {
            var read = RandomAccess.Read(handle, buffer[done..], offset + done);
            if (read <= 0)
            {
                throw new EndOfStreamException($"{path} ended early at byte {offset + done}.");
            }
            done += read;
        }
    }

    private static Dictionary<string, SafeTensorEntry> ParseHeader(byte[] header, string path, long dataLength)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(header);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: safetensors header is not valid JSON: {ex.Message}", ex);
        }
        if (root is not JsonObject obj)
        {
            throw new InvalidDataException($"{path}: safetensors header is not a JSON object.");
        }
        var entries = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
        foreach (var (name, node) in obj)
        {
            if (name == "__metadata__")
            {
                continue;
            }
            try
            {
                var dtype = node!["dtype"]!.GetValue<string>();
                var shape = node["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                var offsets = node["data_offsets"]!.AsArray();
                var begin = offsets[0]!.GetValue<long>();
                var end = offsets[1]!.GetValue<long>();
                if (begin < 0 || end < begin || end > dataLength)
                {
                    throw new InvalidDataException($"{path}: tensor '{name}' data_offsets [{begin}, {end}] lie outside the {dataLength} data bytes.");
                }
                entries[name] = new SafeTensorEntry(name, dtype, shape, begin, end);
            }
            catch (Exception ex) when (ex is NullReferenceException or InvalidOperationException or FormatException or ArgumentOutOfRangeException)
            {
                throw new InvalidDataException($"{path}: safetensors header entry '{name}' lacks dtype, shape or data_offsets.", ex);
            }
        }
        return entries;
    }
}

/// <summary>
/// Minimal safetensors writer: header sorted by name, offsets in that order, header padded with spaces to 8 bytes.
/// To be unified with the project's writer in SensMerging.Core.SafeTensors later.
/// </summary>
internal static class SafeTensorsWriter
{
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var ordered = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var (name, tensor) in ordered)
        {
            var (dtypeName, size) = SafeTensorsFile.FromScalarType(tensor.dtype);
            var bytes = tensor.numel() * size;
            header[name] = new JsonObject
            {
                ["dtype"] = dtypeName,
                ["shape"] = new JsonArray(tensor.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (headerBytes.Length + 7) / 8 * 8;
        var directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        var temporary = path + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(prefix, padded);
            stream.Write(prefix);
            stream.Write(headerBytes);
            for (var i = headerBytes.Length; i < padded; i++)
            {
                stream.WriteByte((byte)' ');
            }
            foreach (var (_, tensor) in ordered)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var cpu = tensor.detach().cpu().contiguous();
                stream.Write(cpu.bytes);
            }
        }
        File.Move(temporary, path, overwrite: true);
    }
}
