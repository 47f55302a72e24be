using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

// Sets VER_FLG_WEAK (0x2) on the vna_flags of the named entry in an ELF64 little-endian file's
// .gnu.version_r (SHT_GNU_verneed), so the dynamic loader tolerates a library that lacks that version.
// Idempotent. Fails the build with a clear message if the file is not such an ELF or has no such entry.
public class SensMergingElfWeakenVersionNeed : Task
{
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string VersionName { get; set; } = "";

    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        foreach (var item in Files)
        {
            var path = item.GetMetadata("FullPath");
            try
            {
                if (!Patch(path))
                {
                    Log.LogError($"{path}: no version requirement named {VersionName} in .gnu.version_r");
                }
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentOutOfRangeException)
            {
                Log.LogError($"{path}: cannot patch ELF version requirements: {ex.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    private bool Patch(string path)
    {
        var b = File.ReadAllBytes(path);
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (b[4] != 2 || b[5] != 1) throw new InvalidDataException("only ELF64 little-endian is supported");
        long shoff = (long)BitConverter.ToUInt64(b, 0x28);
        int shentsize = BitConverter.ToUInt16(b, 0x3A);
        int shnum = BitConverter.ToUInt16(b, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (BitConverter.ToUInt32(b, (int)sh + 4) != ShtGnuVerneed) continue;
            long offset = (long)BitConverter.ToUInt64(b, (int)sh + 0x18);
            int link = (int)BitConverter.ToUInt32(b, (int)sh + 0x28);
            int count = (int)BitConverter.ToUInt32(b, (int)sh + 0x2C);
            long strOffset = (long)BitConverter.ToUInt64(b, (int)(shoff + (long)link * shentsize) + 0x18);
            long vn = offset;
            for (int n = 0; n < count; n++)
            {
                int cnt = BitConverter.ToUInt16(b, (int)vn + 2);
                long aux = vn + BitConverter.ToUInt32(b, (int)vn + 8);
                for (int a = 0; a < cnt; a++)
                {
                    ushort flags = BitConverter.ToUInt16(b, (int)aux + 4);
                    long nameOffset = strOffset + BitConverter.ToUInt32(b, (int)aux + 8);
                    if (ReadString(b, nameOffset) == VersionName)
                    {
                        if ((flags & VerFlgWeak) == 0)
                        {
                            var patched = BitConverter.GetBytes((ushort)(flags | VerFlgWeak));
                            using var fs = new FileStream(path, FileMode.Open, FileAccess.Write);
                            fs.Position = aux + 4;
                            fs.Write(patched, 0, 2);
                        }
                        return true;
                    }
                    aux += BitConverter.ToUInt32(b, (int)aux + 12);
                }
                vn += BitConverter.ToUInt32(b, (int)vn + 12);
            }
        }
        return false;
    }

    private static string ReadString(byte[] b, long offset)
    {
        int end = (int)offset;
        while (end < b.Length && b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)offset, end - (int)offset);
    }
}
