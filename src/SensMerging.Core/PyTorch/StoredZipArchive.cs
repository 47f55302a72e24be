using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace SensMerging.Core.PyTorch;

/// <summary>One entry of a zip archive: where its bytes start in the file and how many there are.</summary>
/// <param name="Name">The entry's name.</param>
/// <param name="DataOffset">Absolute file offset of the entry's (stored, uncompressed) data.</param>
/// <param name="Size">Bytes of data.</param>
/// <param name="Method">The compression method (0 = stored).</param>
internal sealed record ZipEntryLocation(string Name, long DataOffset, long Size, int Method);

/// <summary>
/// The central directory of a zip archive (zip64 included), read without decompressing anything, so that the data of
/// stored (uncompressed) entries can be read by offset, as PyTorch writes its checkpoints. Only what is needed to locate
/// entries is parsed; encrypted, multi-disk or inconsistent archives are refused with a message naming the problem.
/// </summary>
internal static class StoredZipArchive
{
    private const uint EndOfCentralDirectory = 0x06054b50;
    private const uint Zip64Locator = 0x07064b50;
    private const uint Zip64EndOfCentralDirectory = 0x06064b50;
    private const uint CentralHeader = 0x02014b50;
    private const uint LocalHeader = 0x04034b50;
    private const int MaxEntries = 10_000_000;

    /// <summary>True when the file starts with a zip local header (PyTorch's format since 1.6) .</summary>
    public static bool LooksLikeZip(SafeFileHandle handle)
    {
        Span<byte> magic = stackalloc byte[4];
        return RandomAccess.Read(handle, magic, 0) == 4 && BinaryPrimitives.ReadUInt32LittleEndian(magic) == LocalHeader;
    }

    /// <summary>Reads the central directory and each entry's local header.</summary>
    public static Dictionary<string, ZipEntryLocation> ReadEntries(SafeFileHandle handle, string path)
    {
        var length = RandomAccess.GetLength(handle);
        var tailLength = (int)Math.Min(length, 22 + 65535 + 20);
        var tail = new byte[tailLength];
        ReadExactly(handle, tail, length - tailLength, path, "the end of central directory");
        var eocd = -1;
        for (var i = tailLength - 22; i >= 0; i--)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(i)) == EndOfCentralDirectory)
            {
                eocd = i;
                break;
            }
        }
        if (eocd < 0)
        {
            throw PyTorchCheckpointException.In(path, "not a complete zip archive (no end-of-central-directory record; truncated?)");
        }
        var record = tail.AsSpan(eocd);
        long entries = BinaryPrimitives.ReadUInt16LittleEndian(record[10..]);
        long directorySize = BinaryPrimitives.ReadUInt32LittleEndian(record[12..]);
        long directoryOffset = BinaryPrimitives.ReadUInt32LittleEndian(record[16..]);
        if (BinaryPrimitives.ReadUInt16LittleEndian(record[4..]) != 0 || BinaryPrimitives.ReadUInt16LittleEndian(record[6..]) != 0)
        {
            throw PyTorchCheckpointException.In(path, "multi-disk zip archives are not supported");
        }
        if (entries == 0xFFFF || directorySize == 0xFFFFFFFF || directoryOffset == 0xFFFFFFFF)
        {
            if (eocd < 20 || BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(eocd - 20)) != Zip64Locator)
            {
                throw PyTorchCheckpointException.In(path, "zip64 archive without its zip64 locator");
            }
            var zip64Offset = BinaryPrimitives.ReadInt64LittleEndian(tail.AsSpan(eocd - 20 + 8));
            var z = new byte[56];
            if (zip64Offset < 0 || zip64Offset > length - 56)
            {
                throw PyTorchCheckpointException.In(path, $"zip64 end of central directory offset {zip64Offset} is outside the file");
            }
            ReadExactly(handle, z, zip64Offset, path, "the zip64 end of central directory");
            if (BinaryPrimitives.ReadUInt32LittleEndian(z) != Zip64EndOfCentralDirectory)
            {
                throw PyTorchCheckpointException.In(path, "zip64 end of central directory record has a wrong signature");
            }
            entries = BinaryPrimitives.ReadInt64LittleEndian(z.AsSpan(32));
            directorySize = BinaryPrimitives.ReadInt64LittleEndian(z.AsSpan(40));
            directoryOffset = BinaryPrimitives.ReadInt64LittleEndian(z.AsSpan(48));
        }
        if (entries < 0 || entries > MaxEntries || directorySize < 0 || directoryOffset < 0 || directoryOffset + directorySize > length || directorySize > int.MaxValue)
        {
            throw PyTorchCheckpointException.In(path, $"zip central directory ({entries} entries, {directorySize} bytes at {directoryOffset}) does not fit in the file ({length} bytes)");
        }
        var directory = new byte[directorySize];
        ReadExactly(handle, directory, directoryOffset, path, "the zip central directory");
        var result = new Dictionary<string, ZipEntryLocation>(StringComparer.Ordinal);
        var at = 0;
        Span<byte> local = stackalloc byte[30];
        for (long e = 0; e < entries; e++)
        {
            if (at + 46 > directory.Length || BinaryPrimitives.ReadUInt32LittleEndian(directory.AsSpan(at)) != CentralHeader)
            {
                throw PyTorchCheckpointException.In(path, $"zip central directory entry {e} is malformed");
            }
            var h = directory.AsSpan(at);
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(h[8..]);
            int method = BinaryPrimitives.ReadUInt16LittleEndian(h[10..]);
            long compressed = BinaryPrimitives.ReadUInt32LittleEndian(h[20..]);
            long size = BinaryPrimitives.ReadUInt32LittleEndian(h[24..]);
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(h[28..]);
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(h[30..]);
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(h[32..]);
            long localOffset = BinaryPrimitives.ReadUInt32LittleEndian(h[42..]);
            if (at + 46 + nameLength + extraLength + commentLength > directory.Length)
            {
                throw PyTorchCheckpointException.In(path, $"zip central directory entry {e} runs past the directory");
            }
            var name = Encoding.UTF8.GetString(h.Slice(46, nameLength));
            var extra = h.Slice(46 + nameLength, extraLength);
            ReadZip64Extra(extra, ref size, ref compressed, ref localOffset);
            at += 46 + nameLength + extraLength + commentLength;
            if ((flags & 1) != 0)
            {
                throw PyTorchCheckpointException.In(path, $"zip entry '{name}' is encrypted");
            }
            if (localOffset < 0 || localOffset + 30 > length)
            {
                throw PyTorchCheckpointException.In(path, $"zip entry '{name}': local header offset {localOffset} is outside the file");
            }
            ReadExactly(handle, local, localOffset, path, $"the local header of zip entry '{name}'");
            if (BinaryPrimitives.ReadUInt32LittleEndian(local) != LocalHeader)
            {
                throw PyTorchCheckpointException.In(path, $"zip entry '{name}': no local header at offset {localOffset}");
            }
            var dataOffset = localOffset + 30 + BinaryPrimitives.ReadUInt16LittleEndian(local[26..]) + BinaryPrimitives.ReadUInt16LittleEndian(local[28..]);
            if (dataOffset + compressed > length || compressed < 0)
            {
                throw PyTorchCheckpointException.In(path, $"zip entry '{name}' ({compressed} bytes at {dataOffset}) runs past the end of the file ({length} bytes; truncated?)");
            }
            if (method == 0 && compressed != size)
            {
                throw PyTorchCheckpointException.In(path, $"zip entry '{name}' is stored but its sizes disagree ({compressed} and {size})");
            }
            if (!result.TryAdd(name, new ZipEntryLocation(name, dataOffset, size, method)))
            {
                throw PyTorchCheckpointException.In(path, $"zip entry '{name}' appears twice");
            }
        }
        return result;
    }

    /// <summary>Reads exactly <c>destination.Length</c> bytes or throws naming what was being read.</summary>
    public static void ReadExactly(SafeFileHandle handle, Span<byte> destination, long offset, string path, string what)
    {
        var total = 0;
        while (total < destination.Length)
        {
            var n = RandomAccess.Read(handle, destination[total..], offset + total);
            if (n == 0)
            {
                throw PyTorchCheckpointException.In(path, $"file ended while reading {what} (truncated?)");
            }
            total += n;
        }
    }

    private static void ReadZip64Extra(ReadOnlySpan<byte> extra, ref long size, ref long compressed, ref long localOffset)
    {
        while (extra.Length >= 4)
        {
            var id = BinaryPrimitives.ReadUInt16LittleEndian(extra);
            int fieldLength = BinaryPrimitives.ReadUInt16LittleEndian(extra[2..]);
            if (4 + fieldLength > extra.Length)
            {
                return;
            }
            if (id == 0x0001)
            {
                var field = extra.Slice(4, fieldLength);
                if (size == 0xFFFFFFFF && field.Length >= 8)
                {
                    size = BinaryPrimitives.ReadInt64LittleEndian(field);
                    field = field[8..];
                }
                if (compressed == 0xFFFFFFFF && field.Length >= 8)
                {
                    compressed = BinaryPrimitives.ReadInt64LittleEndian(field);
                    field = field[8..];
                }
                if (localOffset == 0xFFFFFFFF && field.Length >= 8)
                {
                    localOffset = BinaryPrimitives.ReadInt64LittleEndian(field);
                }
                return;
            }
            extra = extra[(4 + fieldLength)..];
        }
    }
}
