"""De-identification of DICOM files for export (DICOM PS3.15 Annex E, Basic Profile).

What is done, per file (the profile is the table :data:`PROFILE`, applied recursively to every
sequence item):

* Attributes of PS3.15 Table E.1-1 get the Basic Application Level Confidentiality Profile action
  (X remove, Z empty, D dummy, U new UID, K keep), with these options, recorded in
  DeidentificationMethodCodeSequence (CID 7050):

  - 113107 *Retain Longitudinal Temporal Information with Modified Dates*: every date
    (DA, and the date part of DT) is shifted by a whole number of days that depends only on the
    key and the patient ID, times are kept. Time differences within and across visits of a
    patient (injection to scan for SUV decay correction, visit intervals) stay exact.
  - 113108 *Retain Patient Characteristics*: PatientSex, PatientSize and PatientWeight are kept
    (SUVbw needs the weight, SUL the sex and height); PatientAge is removed.
  - 113111 *Retain Safe Private*: private tags are removed except the safe list
    :data:`SAFE_PRIVATE` needed for PET quantitation (Philips SUV scale factor (7053,xx00) and
    activity concentration scale factor (7053,xx09); GE scan DateTime (0009,xx0D), date-shifted).

* Pseudonyms are keyed HMAC-SHA256 digests: PatientID and PatientName become the same
  pseudonym ``ANON-<10 characters>`` for the same patient and key, in every file and every run.
* Every UID that is not a standard DICOM UID (SOP class, transfer syntax, ...) is replaced by
  ``2.25.<128-bit integer>`` derived from the key and the original UID, so references between
  files (SEG to image, series, frame of reference) stay consistent.
* Safety nets beyond the table: any other person name (VR PN) is removed, any other date is
  shifted, overlays (60xx) and curves (50xx) are removed, a file flagged
  BurnedInAnnotation=YES is refused (pixel data are not cleaned).
* PatientIdentityRemoved = YES, LongitudinalTemporalInformationModified = MODIFIED,
  DeidentificationMethod is set.
* File meta: MediaStorageSOPInstanceUID is the new SOPInstanceUID; only the elements describing
  the encoding and the implementation are kept (AE titles and presentation addresses of the
  sending and receiving systems, private information are removed); the preamble is zeroed.

Geometry (positions, orientation, spacing), pixel data, rescale and PET quantification tags
(Units, CorrectedImage, DecayCorrection, RadiopharmaceuticalInformationSequence doses and
half-life) are not in the table and are kept.

Limitations: SR ContentSequence is removed (stricter than the profile's dummy: its content
items are not cleaned; export SR reports separately);
free text in descriptions is removed, not cleaned.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import Tag
from pydicom.uid import UID_dictionary

from islet_imaging import __version__
from islet_imaging.errors import IsletImagingError
from islet_imaging.io._dicom_datetime import parse_da
from islet_imaging.io._dicom_files import NotDicomError, ZipReader, read_dicom_file, write_object

__all__ = [
    "PROFILE",
    "SAFE_PRIVATE",
    "Action",
    "Deidentifier",
    "ExportReport",
    "export_deidentified",
]


class Action(enum.StrEnum):
    """Action codes of PS3.15 Table E.1-1 (after choosing among compound codes)."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    KEEP = "K"
    SHIFT = "C"  # "clean": dates shifted (Retain Longitudinal ... Modified Dates option)


# PS3.15 Table E.1-1, every row with a single tag (edition 2026c; checked row by row against an
# independent copy in tests/exchange/test_deidentify_profile.py). Repeating-group rows (curves
# 50xx, overlay data and comments 60xx) are handled in code, not here.
# Columns: tag | attribute | Basic Profile | with options 113107 (dates) / 113108 (characteristics)
# Compound basic codes are resolved conservatively: X/Z -> Z, X/D and Z/D -> D (sequences with
# X/D -> X), X/Z/D -> Z, X/Z/U* -> U (sequences of references: UIDs remapped inside).
# Every DA/DT/TM row gets C with option 113107 (dates shifted, times of day kept).
# Stricter than the profile: Content Sequence is X (profile D): SR content is not cleaned.
_TABLE = """
0008,0050 | Accession Number | Z |
0018,4000 | Acquisition Comments | X |
0040,0556 | Acquisition Context Description | X |
0040,0555 | Acquisition Context Sequence | X |
0008,0022 | Acquisition Date | Z | C
0008,002A | Acquisition DateTime | D | C
0018,1400 | Acquisition Device Processing Description | D |
0018,11BB | Acquisition Field of View Label | D |
0018,9424 | Acquisition Protocol Description | X |
0008,0032 | Acquisition Time | Z | C
0008,0017 | Acquisition UID | U |
0040,4035 | Actual Human Performers Sequence | X |
0010,21B0 | Additional Patient History | X |
0040,A353 | Address (Trial) | X |
0038,0010 | Admission ID | X |
0038,0020 | Admitting Date | X | C
0008,1084 | Admitting Diagnoses Code Sequence | X |
0008,1080 | Admitting Diagnoses Description | X |
0038,0021 | Admitting Time | X | C
0000,1000 | Affected SOP Instance UID | X |
0010,2110 | Allergies | X |
0040,B034 | Annotation DateTime | X |
006A,0006 | Annotation Group Description | X |
006A,0005 | Annotation Group Label | D |
006A,0003 | Annotation Group UID | D |
0044,0004 | Approval Status DateTime | X | C
4000,0010 | Arbitrary | X |
0044,0104 | Assertion DateTime | D | C
0044,0105 | Assertion Expiration DateTime | X | C
0400,0562 | Attribute Modification DateTime | D | C
0040,A078 | Author Observer Sequence | X |
2200,0005 | Barcode Value | Z |
300A,00C3 | Beam Description | X |
300C,0127 | Beam Hold Transition DateTime | D | C
300A,00DD | Bolus Description | X |
0010,1081 | Branch of Service | X |
0014,407E | Calibration Date | X | C
0018,1203 | Calibration DateTime | Z | C
0014,407C | Calibration Time | X | C
0016,004D | Camera Owner Name | X |
0018,1007 | Cassette ID | X |
0400,0115 | Certificate of Signer | D |
0400,0310 | Certified Timestamp | X |
003A,020C | Channel Derivation Description | X |
003A,0203 | Channel Label | X |
0012,0060 | Clinical Trial Coordinating Center Name | Z |
0012,0082 | Clinical Trial Protocol Ethics Committee Approval Number | X |
0012,0081 | Clinical Trial Protocol Ethics Committee Name | D |
0012,0020 | Clinical Trial Protocol ID | D |
0012,0021 | Clinical Trial Protocol Name | Z |
0012,0072 | Clinical Trial Series Description | X |
0012,0071 | Clinical Trial Series ID | X |
0012,0030 | Clinical Trial Site ID | Z |
0012,0031 | Clinical Trial Site Name | Z |
0012,0010 | Clinical Trial Sponsor Name | D |
0012,0040 | Clinical Trial Subject ID | D |
0012,0042 | Clinical Trial Subject Reading ID | D |
0012,0051 | Clinical Trial Time Point Description | X |
0012,0050 | Clinical Trial Time Point ID | Z |
0040,0310 | Comments on Radiation Dose | X |
0040,0280 | Comments on the Performed Procedure Step | X |
300A,02EB | Compensator Description | X |
0020,9161 | Concatenation UID | U |
3010,000F | Conceptual Volume Combination Description | Z |
3010,0017 | Conceptual Volume Description | Z |
3010,0006 | Conceptual Volume UID | U |
0040,3001 | Confidentiality Constraint on Patient Data Description | X |
3010,0013 | Constituent Conceptual Volume UID | U |
0008,009D | Consulting Physician Identification Sequence | X |
0008,009C | Consulting Physician's Name | Z |
0050,001B | Container Component ID | X |
0040,051A | Container Description | X |
0040,0512 | Container Identifier | D |
0070,0086 | Content Creator's Identification Code Sequence | X |
0070,0084 | Content Creator's Name | Z |
0008,0023 | Content Date | D | C
0040,A730 | Content Sequence | X |
0008,0033 | Content Time | D | C
0008,0107 | Context Group Local Version | D | C
0008,0106 | Context Group Version | D | C
0018,0010 | Contrast/Bolus Agent | D |
0018,1042 | Contrast/Bolus Start Time | X | C
0018,1043 | Contrast/Bolus Stop Time | X | C
0018,A002 | Contribution DateTime | X | C
0018,A003 | Contribution Description | X |
0010,2150 | Country of Residence | X |
2100,0040 | Creation Date | X | C
2100,0050 | Creation Time | X | C
0040,A307 | Current Observer (Trial) | X |
0038,0300 | Current Patient Location | X |
0008,0025 | Curve Date | X | C
0008,0035 | Curve Time | X | C
0040,A07C | Custodial Organization Sequence | X |
FFFC,FFFC | Data Set Trailing Padding | X |
0040,A121 | Date | D | C
0040,A110 | Date of Document or Verbal Transaction (Trial) | X | C
0018,1205 | Date of Installation | X | C
0018,1200 | Date of Last Calibration | X | C
0018,700C | Date of Last Detector Calibration | D | C
0018,1204 | Date of Manufacture | X | C
0018,1012 | Date of Secondary Capture | X | C
0040,A120 | DateTime | D | C
0018,1202 | DateTime of Last Calibration | X | C
0018,9701 | Decay Correction DateTime | D | C
0018,937F | Decomposition Description | X |
0008,2111 | Derivation Description | X |
2100,0140 | Destination AE | D |
0018,700A | Detector ID | X |
3010,001B | Device Alternate Identifier | Z |
0050,0020 | Device Description | X |
3010,002D | Device Label | D |
0018,1000 | Device Serial Number | Z |
0016,004B | Device Setting Description | X |
0018,1002 | Device UID | U |
0400,0105 | Digital Signature DateTime | D | C
0400,0100 | Digital Signature UID | U |
FFFA,FFFA | Digital Signatures Sequence | X |
0020,9164 | Dimension Organization UID | U |
0038,0030 | Discharge Date | X | C
0038,0040 | Discharge Diagnosis Description | X |
0038,0032 | Discharge Time | X | C
300A,079A | Displacement Reference Label | X |
0040,E012 | Display URI | X |
4008,011A | Distribution Address | X |
4008,0119 | Distribution Name | X |
300A,0016 | Dose Reference Description | X |
300A,0013 | Dose Reference UID | U |
3010,006E | Dosimetric Objective UID | U |
0068,6226 | Effective DateTime | D | C
0040,A034 | Effective Start DateTime | X |
0040,A035 | Effective Stop DateTime | X |
0042,0011 | Encapsulated Document | D |
3010,0037 | Entity Description | X |
3010,0035 | Entity Label | D |
3010,0038 | Entity Long Label | D |
3010,0036 | Entity Name | X |
300A,0676 | Equipment Frame of Reference Description | X |
0012,0087 | Ethics Committee Approval Effectiveness End Date | X | C
0012,0086 | Ethics Committee Approval Effectiveness Start Date | X | C
0010,2160 | Ethnic Group | X |
0010,2161 | Ethnic Group Code Sequence | X |
0010,2162 | Ethnic Groups | X |
0018,9804 | Exclusion Start DateTime | D | C
0040,4011 | Expected Completion DateTime | X | C
0008,0058 | Failed SOP Instance UID List | U |
0070,031A | Fiducial UID | U |
0040,2017 | Filler Order Number / Imaging Service Request | Z |
003A,032B | Filter Lookup Table Description | X |
0040,A023 | Findings Group Recording Date (Trial) | X | C
0040,A024 | Findings Group Recording Time (Trial) | X | C
3008,0054 | First Treatment Date | D | C
300A,0196 | Fixation Device Description | X |
0034,0002 | Flow Identifier | D |
0034,0001 | Flow Identifier Sequence | D |
300A,0072 | Fraction Group Description | X |
3010,007F | Fractionation Notes | Z |
0018,9074 | Frame Acquisition DateTime | D | C
0020,9158 | Frame Comments | X |
0020,0052 | Frame of Reference UID | U |
0034,0007 | Frame Origin Timestamp | D |
0018,9151 | Frame Reference DateTime | D | C
0018,9623 | Functional Sync Pulse | D | C
0018,1008 | Gantry ID | X |
0010,0044 | Gender Identity Code Sequence | X |
0010,0045 | Gender Identity Comment | X |
0010,0041 | Gender Identity Sequence | X |
0018,1005 | Generator ID | X |
0016,0076 | GPS Altitude | X |
0016,0075 | GPS Altitude Ref | X |
0016,008C | GPS Area Information | X |
0016,008D | GPS Date Stamp | X | C
0016,0088 | GPS Dest Bearing | X |
0016,0087 | GPS Dest Bearing Ref | X |
0016,008A | GPS Dest Distance | X |
0016,0089 | GPS Dest Distance Ref | X |
0016,0084 | GPS Dest Latitude | X |
0016,0083 | GPS Dest Latitude Ref | X |
0016,0086 | GPS Dest Longitude | X |
0016,0085 | GPS Dest Longitude Ref | X |
0016,008E | GPS Differential | X |
0016,007B | GPS DOP | X |
0016,0081 | GPS Img Direction | X |
0016,0080 | GPS Img Direction Ref | X |
0016,0072 | GPS Latitude | X |
0016,0071 | GPS Latitude Ref | X |
0016,0074 | GPS Longitude | X |
0016,0073 | GPS Longitude Ref | X |
0016,0082 | GPS Map Datum | X |
0016,007A | GPS Measure Mode | X |
0016,008B | GPS Processing Method | X |
0016,0078 | GPS Satellites | X |
0016,007D | GPS Speed | X |
0016,007C | GPS Speed Ref | X |
0016,0079 | GPS Status | X |
0016,0077 | GPS Time Stamp | X | C
0016,007F | GPS Track | X |
0016,007E | GPS Track Ref | X |
0016,0070 | GPS Version ID | X |
0070,0001 | Graphic Annotation Sequence | D |
0072,000A | Hanging Protocol Creation DateTime | D | C
0018,1011 | Hardcopy Creation Device ID | X |
0008,1304 | Histological Diagnoses Code Sequence | X |
0040,E004 | HL7 Document Effective Time | X | C
0040,4037 | Human Performers Name | X |
0040,4036 | Human Performers Organization | X |
0088,0200 | Icon Image Sequence | X |
0008,4000 | Identifying Comments | X |
0020,4000 | Image Comments | X |
0028,4000 | Image Presentation Comments | X |
0040,2400 | Imaging Service Request Comments | X |
003A,0314 | Impedance Measurement DateTime | D | C
4008,0300 | Impressions | X |
0068,6270 | Information Issue DateTime | D | C
0008,0015 | Instance Coercion DateTime | X |
0008,0012 | Instance Creation Date | D | C
0008,0013 | Instance Creation Time | Z | C
0008,0014 | Instance Creator UID | U |
0400,0600 | Instance Origin Status | X |
0008,0081 | Institution Address | X |
0008,0082 | Institution Code Sequence | Z |
0008,0080 | Institution Name | Z |
0008,1040 | Institutional Department Name | X |
0008,1041 | Institutional Department Type Code Sequence | X |
0018,9919 | Instruction Performed DateTime | D | C
0010,1050 | Insurance Plan Identification | X |
3010,0085 | Intended Fraction Start Time | X | C
3010,004D | Intended Phase End Date | D | C
3010,004C | Intended Phase Start Date | D | C
0040,1011 | Intended Recipients of Results Identification Sequence | X |
300A,0741 | Interlock DateTime | D | C
300A,0742 | Interlock Description | D |
300A,0783 | Interlock Origin Description | D |
4008,0112 | Interpretation Approval Date | X | C
4008,0113 | Interpretation Approval Time | X | C
4008,0111 | Interpretation Approver Sequence | X |
4008,010C | Interpretation Author | X |
4008,0115 | Interpretation Diagnosis Description | X |
4008,0200 | Interpretation ID | X |
4008,0202 | Interpretation ID Issuer | X |
4008,0100 | Interpretation Recorded Date | X | C
4008,0101 | Interpretation Recorded Time | X | C
4008,0102 | Interpretation Recorder | X |
4008,010B | Interpretation Text | X |
4008,010A | Interpretation Transcriber | X |
4008,0108 | Interpretation Transcription Date | X | C
4008,0109 | Interpretation Transcription Time | X | C
0018,0035 | Intervention Drug Start Time | X | C
0018,0027 | Intervention Drug Stop Time | X | C
0008,3010 | Irradiation Event UID | U |
0040,2004 | Issue Date of Imaging Service Request | X | C
0040,2005 | Issue Time of Imaging Service Request | X | C
0038,0011 | Issuer of Admission ID | X |
0038,0014 | Issuer of Admission ID Sequence | X |
0012,0022 | Issuer of Clinical Trial Protocol ID | X |
0012,0073 | Issuer of Clinical Trial Series ID | X |
0012,0032 | Issuer of Clinical Trial Site ID | X |
0012,0041 | Issuer of Clinical Trial Subject ID | X |
0012,0043 | Issuer of Clinical Trial Subject Reading ID | X |
0012,0055 | Issuer of Clinical Trial Time Point ID | X |
0010,0021 | Issuer of Patient ID | X |
0038,0061 | Issuer of Service Episode ID | X |
0038,0064 | Issuer of Service Episode ID Sequence | X |
0040,0513 | Issuer of the Container Identifier Sequence | Z |
0040,0562 | Issuer of the Specimen Identifier Sequence | Z |
2200,0002 | Label Text | Z |
0028,1214 | Large Palette Color Lookup Table UID | U |
0010,21D0 | Last Menstrual Date | X | C
0016,004F | Lens Make | X |
0016,0050 | Lens Model | X |
0016,0051 | Lens Serial Number | X |
0016,004E | Lens Specification | X |
0050,0021 | Long Device Description | X |
0400,0404 | MAC | X |
0016,002B | Maker Note | X |
0018,100B | Manufacturer's Device Class UID | U |
3010,0043 | Manufacturer's Device Identifier | Z |
0002,0003 | Media Storage SOP Instance UID | U |
0010,2000 | Medical Alerts | X |
0010,1090 | Medical Record Locator | X |
0010,1080 | Military Rank | X |
0400,0550 | Modified Attributes Sequence | X |
0020,3403 | Modified Image Date | X | C
0020,3406 | Modified Image Description | X |
0020,3405 | Modified Image Time | X | C
0020,3401 | Modifying Device ID | X |
0400,0563 | Modifying System | D |
0040,B03F | Montage Channel Label | X |
0040,B03B | Montage Name | X |
3008,0056 | Most Recent Treatment Date | D | C
0018,937B | Multi-energy Acquisition Description | X |
003A,0020 | Multiplex Group Label | X |
003A,0310 | Multiplex Group UID | U |
0008,1060 | Name of Physician(s) Reading Study | X |
0010,0012 | Name to Use | X |
0010,0013 | Name to Use Comment | X |
0040,1010 | Names of Intended Recipients of Results | X |
0008,1000 | Network ID | X |
0400,0552 | Nonconforming Data Element Value | X |
0400,0551 | Nonconforming Modified Attributes Sequence | X |
0040,A192 | Observation Date (Trial) | X | C
0040,A032 | Observation DateTime | D | C
0040,A033 | Observation Start DateTime | X | C
0040,A402 | Observation Subject UID (Trial) | U |
0040,A193 | Observation Time (Trial) | X | C
0040,A171 | Observation UID | U |
0010,2180 | Occupation | X |
0008,1072 | Operators' Identification Sequence | D |
0008,1070 | Operators' Name | Z |
0040,2010 | Order Callback Phone Number | X |
0040,2011 | Order Callback Telecom Information | X |
0040,2008 | Order Entered By | X |
0040,2009 | Order Enterer's Location | X |
0400,0561 | Original Attributes Sequence | X |
2100,0070 | Originator | X |
0012,0023 | Other Clinical Trial Protocol IDs Sequence | X |
0010,1000 | Other Patient IDs | X |
0010,1002 | Other Patient IDs Sequence | X |
0010,1001 | Other Patient Names | X |
0008,0024 | Overlay Date | X | C
0008,0034 | Overlay Time | X | C
300A,0760 | Override DateTime | D | C
0028,1199 | Palette Color Lookup Table UID | U |
0040,A07A | Participant Sequence | X |
0040,A082 | Participation DateTime | Z | C
0010,4000 | Patient Comments | X |
0010,0020 | Patient ID | Z |
300A,0794 | Patient Setup Photo Description | X |
300A,0650 | Patient Setup UID | U |
0038,0500 | Patient State | X |
0040,1004 | Patient Transport Arrangements | X |
300A,0792 | Patient Treatment Preparation Method Description | X |
300A,078E | Patient Treatment Preparation Procedure Parameter Description | X |
0010,1040 | Patient's Address | X |
0010,1010 | Patient's Age | X |
0010,0030 | Patient's Birth Date | Z |
0010,1005 | Patient's Birth Name | X |
0010,0032 | Patient's Birth Time | X |
0038,0400 | Patient's Institution Residence | X |
0010,0050 | Patient's Insurance Plan Code Sequence | X |
0010,1060 | Patient's Mother's Birth Name | X |
0010,0010 | Patient's Name | Z |
0010,0101 | Patient's Primary Language Code Sequence | X |
0010,0102 | Patient's Primary Language Modifier Code Sequence | X |
0010,21F0 | Patient's Religious Preference | X |
0010,0040 | Patient's Sex | Z | K
0010,2203 | Patient's Sex Neutered | Z |
0010,1020 | Patient's Size | X | K
0010,2155 | Patient's Telecom Information | X |
0010,2154 | Patient's Telephone Numbers | X |
0010,1030 | Patient's Weight | X | K
0040,0243 | Performed Location | X |
0040,0254 | Performed Procedure Step Description | X |
0040,0250 | Performed Procedure Step End Date | X | C
0040,4051 | Performed Procedure Step End DateTime | X | C
0040,0251 | Performed Procedure Step End Time | X | C
0040,0253 | Performed Procedure Step ID | X |
0040,0244 | Performed Procedure Step Start Date | X | C
0040,4050 | Performed Procedure Step Start DateTime | X | C
0040,0245 | Performed Procedure Step Start Time | X | C
0040,0241 | Performed Station AE Title | X |
0040,4030 | Performed Station Geographic Location Code Sequence | X |
0040,0242 | Performed Station Name | X |
0040,4028 | Performed Station Name Code Sequence | X |
0008,1052 | Performing Physician Identification Sequence | X |
0008,1050 | Performing Physician's Name | X |
0040,1101 | Person Identification Code Sequence | D |
0040,A123 | Person Name | D |
0010,0011 | Person Names to Use Sequence | X |
0040,1102 | Person's Address | X |
0040,1104 | Person's Telecom Information | X |
0040,1103 | Person's Telephone Numbers | X |
4008,0114 | Physician Approving Interpretation | X |
0008,1048 | Physician(s) of Record | X |
0008,1049 | Physician(s) of Record Identification Sequence | X |
0008,1062 | Physician(s) Reading Study Identification Sequence | X |
0040,2016 | Placer Order Number / Imaging Service Request | Z |
0018,1004 | Plate ID | X |
3002,0123 | Position Acquisition Template Description | X |
3002,0121 | Position Acquisition Template Name | X |
0040,0012 | Pre-Medication | X |
0010,21C0 | Pregnancy Status | X |
300A,000E | Prescription Description | X |
3010,007B | Prescription Notes | Z |
3010,0081 | Prescription Notes Sequence | Z |
0070,0082 | Presentation Creation Date | X | C
0070,0083 | Presentation Creation Time | X | C
0070,1101 | Presentation Display Collection UID | U |
0070,1102 | Presentation Sequence Collection UID | U |
0008,1302 | Primary Diagnosis Code Sequence | X |
0008,1301 | Principal Diagnosis Code Sequence | X |
3010,0061 | Prior Treatment Dose Description | X |
0040,4052 | Procedure Step Cancellation DateTime | X | C
0044,000B | Product Expiration DateTime | X | C
0010,0015 | Pronoun Code Sequence | X |
0010,0016 | Pronoun Comment | X |
0018,1030 | Protocol Name | D |
0008,1088 | Pyramid Description | X |
0020,0027 | Pyramid Label | X |
0008,0019 | Pyramid UID | U |
300A,0619 | Radiation Dose Identification Label | D |
300A,0623 | Radiation Dose In-Vivo Measurement Label | D |
300A,067D | Radiation GenerationMode Description | Z |
300A,067C | Radiation GenerationMode Label | D |
0018,1078 | Radiopharmaceutical Start DateTime | X | C
0018,1072 | Radiopharmaceutical Start Time | X | C
0018,1079 | Radiopharmaceutical Stop DateTime | X | C
0018,1073 | Radiopharmaceutical Stop Time | X | C
300C,0113 | Reason for Omission Description | X |
0040,100A | Reason for Requested Procedure Code Sequence | X |
0032,1030 | Reason for Study | X |
3010,005C | Reason for Superseding | Z |
0400,0565 | Reason for the Attribute Modification | D |
0040,2001 | Reason for the Imaging Service Request | X |
0040,1002 | Reason for the Requested Procedure | X |
0032,1066 | Reason for Visit | X |
0032,1067 | Reason for Visit Code Sequence | X |
0074,1234 | Receiving AE | X |
300A,073A | Recorded RT Control Point DateTime | D | C
3010,000B | Referenced Conceptual Volume UID | U |
0040,A13A | Referenced DateTime | D | C
0400,0402 | Referenced Digital Signature Sequence | X |
300A,0083 | Referenced Dose Reference UID | U |
3010,006F | Referenced Dosimetric Objective UID | U |
3010,0031 | Referenced Fiducials UID | U |
3006,0024 | Referenced Frame of Reference UID | U |
0040,4023 | Referenced General Purpose Scheduled Procedure Step Transaction UID | U |
0008,1140 | Referenced Image Sequence | U |
0040,A172 | Referenced Observation UID (Trial) | U |
0038,0004 | Referenced Patient Alias Sequence | X |
0010,1100 | Referenced Patient Photo Sequence | X |
0008,1120 | Referenced Patient Sequence | X |
0008,1111 | Referenced Performed Procedure Step Sequence | Z |
0400,0403 | Referenced SOP Instance MAC Sequence | X |
0008,1155 | Referenced SOP Instance UID | U |
0004,1511 | Referenced SOP Instance UID in File | U |
0008,1110 | Referenced Study Sequence | Z |
300A,0785 | Referenced Treatment Position Group UID | U |
0008,0092 | Referring Physician's Address | X |
0008,0096 | Referring Physician's Identification Sequence | X |
0008,0090 | Referring Physician's Name | Z |
0008,0094 | Referring Physician's Telephone Numbers | X |
0010,2152 | Region of Residence | X |
3006,00C2 | Related Frame of Reference UID | U |
0040,0275 | Request Attributes Sequence | X |
0032,1070 | Requested Contrast Agent | X |
0040,1400 | Requested Procedure Comments | X |
0032,1060 | Requested Procedure Description | Z |
0040,1001 | Requested Procedure ID | X |
0040,1005 | Requested Procedure Location | X |
0018,9937 | Requested Series Description | X |
0000,1001 | Requested SOP Instance UID | U |
0074,1236 | Requesting AE | X |
0032,1032 | Requesting Physician | X |
0032,1033 | Requesting Service | X |
0018,9185 | Respiratory Motion Compensation Technique Description | X |
0010,2299 | Responsible Organization | X |
0010,2297 | Responsible Person | X |
4008,4000 | Results Comments | X |
4008,0118 | Results Distribution List Sequence | X |
4008,0040 | Results ID | X |
4008,0042 | Results ID Issuer | X |
0008,0054 | Retrieve AE Title | X |
300E,0004 | Review Date | Z | C
300E,0005 | Review Time | Z | C
300E,0008 | Reviewer Name | Z |
3006,004D | ROI Creator Sequence | X |
3006,002D | ROI DateTime | X | C
3006,0028 | ROI Description | X |
3006,0038 | ROI Generation Description | X |
3006,00A6 | ROI Interpreter | Z |
3006,004E | ROI Interpreter Sequence | X |
3006,0026 | ROI Name | Z |
3006,002E | ROI Observation DateTime | X | C
3006,0088 | ROI Observation Description | X |
3006,0085 | ROI Observation Label | X |
300A,0615 | RT Accessory Device Slot ID | Z |
300A,0611 | RT Accessory Holder Slot ID | Z |
3010,005A | RT Physician Intent Narrative | Z |
300A,0006 | RT Plan Date | D | C
300A,0004 | RT Plan Description | X |
300A,0002 | RT Plan Label | D |
300A,0003 | RT Plan Name | X |
300A,0007 | RT Plan Time | D | C
3010,0054 | RT Prescription Label | D |
300A,062A | RT Tolerance Set Label | D |
3010,0056 | RT Treatment Approach Label | D |
3010,003B | RT Treatment Phase UID | U |
3008,0162 | Safe Position Exit Date | D | C
3008,0164 | Safe Position Exit Time | D | C
3008,0166 | Safe Position Return Date | D | C
3008,0168 | Safe Position Return Time | D | C
0038,001A | Scheduled Admission Date | X | C
0038,001B | Scheduled Admission Time | X | C
0038,001C | Scheduled Discharge Date | X | C
0038,001D | Scheduled Discharge Time | X | C
0040,4034 | Scheduled Human Performers Sequence | X |
0038,001E | Scheduled Patient Institution Residence | X |
0040,000B | Scheduled Performing Physician Identification Sequence | X |
0040,0006 | Scheduled Performing Physician's Name | X |
0040,0007 | Scheduled Procedure Step Description | X |
0040,0004 | Scheduled Procedure Step End Date | X | C
0040,0005 | Scheduled Procedure Step End Time | X | C
0040,4008 | Scheduled Procedure Step Expiration DateTime | X | C
0040,0009 | Scheduled Procedure Step ID | X |
0040,0011 | Scheduled Procedure Step Location | X |
0040,4010 | Scheduled Procedure Step Modification DateTime | X | C
0040,0002 | Scheduled Procedure Step Start Date | X | C
0040,4005 | Scheduled Procedure Step Start DateTime | X | C
0040,0003 | Scheduled Procedure Step Start Time | X | C
0040,0001 | Scheduled Station AE Title | X |
0040,4027 | Scheduled Station Geographic Location Code Sequence | X |
0040,0010 | Scheduled Station Name | X |
0040,4025 | Scheduled Station Name Code Sequence | X |
0032,1020 | Scheduled Study Location | X |
0032,1021 | Scheduled Study Location AE Title | X |
0032,1000 | Scheduled Study Start Date | X | C
0032,1001 | Scheduled Study Start Time | X | C
0032,1010 | Scheduled Study Stop Date | X | C
0032,1011 | Scheduled Study Stop Time | X | C
0018,1010 | Secondary Capture Device ID | X |
0008,1303 | Secondary Diagnoses Code Sequence | X |
0040,B036 | Segment Definition DateTime | X |
0072,005E | Selector AE Value | D |
0072,005F | Selector AS Value | D |
0072,0061 | Selector DA Value | D | C
0072,0063 | Selector DT Value | D | C
0072,0066 | Selector LO Value | D |
0072,0068 | Selector LT Value | D |
0072,0065 | Selector OB Value | D |
0072,006A | Selector PN Value | D |
0072,006C | Selector SH Value | D |
0072,006E | Selector ST Value | D |
0072,006B | Selector TM Value | D | C
0072,006D | Selector UN Value | D |
0072,0071 | Selector UR Value | D |
0072,0070 | Selector UT Value | D |
0008,0021 | Series Date | D | C
0008,103E | Series Description | X |
0020,000E | Series Instance UID | U |
0008,0031 | Series Time | D | C
0038,0062 | Service Episode Description | X |
0038,0060 | Service Episode ID | X |
300A,01B2 | Setup Technique Description | X |
0010,0046 | Sex Parameters for Clinical Use Category Code Sequence | X |
0010,0042 | Sex Parameters for Clinical Use Category Comment | X |
0010,0047 | Sex Parameters for Clinical Use Category Reference | X |
0010,0043 | Sex Parameters for Clinical Use Category Sequence | X |
300A,01A6 | Shielding Device Description | X |
0040,06FA | Slide Identifier | X |
0010,21A0 | Smoking Status | X |
0018,1020 | Software Versions | Z |
0100,0420 | SOP Authorization DateTime | X | C
0008,0018 | SOP Instance UID | U |
0002,0016 | Source Application Entity Title | X |
3010,0015 | Source Conceptual Volume UID | U |
0018,936A | Source End DateTime | D | C
0064,0003 | Source Frame of Reference UID | U |
0034,0005 | Source Identifier | D |
0008,2112 | Source Image Sequence | U |
300A,0216 | Source Manufacturer | X |
0400,0564 | Source of Previous Values | Z |
3008,0105 | Source Serial Number | Z |
0018,9369 | Source Start DateTime | D | C
300A,022C | Source Strength Reference Date | D | C
300A,022E | Source Strength Reference Time | D | C
0038,0050 | Special Needs | X |
0040,050A | Specimen Accession Number | X |
0040,0602 | Specimen Detailed Description | X |
0040,0551 | Specimen Identifier | D |
0040,0610 | Specimen Preparation Sequence | Z |
0040,0600 | Specimen Short Description | X |
0040,0554 | Specimen UID | U |
0018,9516 | Start Acquisition DateTime | D | C
0008,0055 | Station AE Title | X |
0008,1010 | Station Name | Z |
0018,9517 | Stop Acquisition DateTime | D | C
0088,0140 | Storage Media File-set UID | U |
3006,0008 | Structure Set Date | Z | C
3006,0006 | Structure Set Description | X |
3006,0002 | Structure Set Label | D |
3006,0004 | Structure Set Name | X |
3006,0009 | Structure Set Time | Z | C
0032,1040 | Study Arrival Date | X | C
0032,1041 | Study Arrival Time | X | C
0032,4000 | Study Comments | X |
0032,1050 | Study Completion Date | X | C
0032,1051 | Study Completion Time | X | C
0008,0020 | Study Date | Z | C
0008,1030 | Study Description | X |
0020,0010 | Study ID | Z |
0032,0012 | Study ID Issuer | X |
0020,000D | Study Instance UID | U |
0032,0034 | Study Read Date | X | C
0032,0035 | Study Read Time | X | C
0008,0030 | Study Time | Z | C
0032,0032 | Study Verified Date | X | C
0032,0033 | Study Verified Time | X | C
0044,0010 | Substance Administration DateTime | X | C
0020,0200 | Synchronization Frame of Reference UID | U |
300A,0054 | Table Top Position Alignment UID | U |
0018,2042 | Target UID | U |
0040,A354 | Telephone Number (Trial) | X |
0040,DB0D | Template Extension Creator UID | U |
0040,DB0C | Template Extension Organization UID | U |
0040,DB07 | Template Local Version | X | C
0040,DB06 | Template Version | X | C
4000,4000 | Text Comments | X |
2030,0020 | Text String | X |
0010,0014 | Third Person Pronouns Sequence | X |
0040,A122 | Time | D | C
0040,A112 | Time of Document Creation or Verbal Transaction (Trial) | X | C
0018,1201 | Time of Last Calibration | X | C
0018,700E | Time of Last Detector Calibration | D | C
0018,1014 | Time of Secondary Capture | X | C
0008,0201 | Timezone Offset From UTC | X |
0088,0910 | Topic Author | X |
0088,0912 | Topic Keywords | X |
0088,0906 | Topic Subject | X |
0088,0904 | Topic Title | X |
0062,0021 | Tracking UID | U |
0008,1195 | Transaction UID | U |
0018,5011 | Transducer Identification Sequence | X |
3008,0024 | Treatment Control Point Date | D | C
3008,0025 | Treatment Control Point Time | D | C
3008,0250 | Treatment Date | D | C
300A,00B2 | Treatment Machine Name | Z |
300A,0608 | Treatment Position Group Label | D |
300A,0609 | Treatment Position Group UID | U |
300A,0700 | Treatment Session UID | U |
3010,0077 | Treatment Site | D |
300A,000B | Treatment Sites | X |
3010,007A | Treatment Technique Notes | Z |
3008,0251 | Treatment Time | D | C
300A,0736 | Treatment Tolerance Violation DateTime | D | C
300A,0734 | Treatment Tolerance Violation Description | D |
0018,100A | UDI Sequence | X |
0040,A124 | UID | U |
0070,0006 | Unformatted Text Value | D |
0018,1009 | Unique Device Identifier | X |
3010,0033 | User Content Label | D |
3010,0034 | User Content Long Label | D |
0040,A352 | Verbal Source (Trial) | X |
0040,A358 | Verbal Source Identifier Code Sequence (Trial) | X |
0040,A030 | Verification DateTime | D | C
0040,A088 | Verifying Observer Identification Code Sequence | Z |
0040,A075 | Verifying Observer Name | D |
0040,A073 | Verifying Observer Sequence | D |
0040,A027 | Verifying Organization | D |
0038,4000 | Visit Comments | X |
0040,B020 | Waveform Annotation Sequence | X |
003A,0329 | Waveform Filter Description | X |
0018,9371 | X-Ray Detector ID | D |
0018,9373 | X-Ray Detector Label | X |
0018,9367 | X-Ray Source ID | D |
"""


@dataclass(frozen=True)
class ProfileRow:
    """One row of the profile table."""

    tag: int
    name: str
    basic: Action
    with_options: Action


def _parse_table(text: str) -> dict[int, ProfileRow]:
    rows = {}
    for line in text.strip().splitlines():
        tag_text, name, basic, option = (part.strip() for part in line.split("|"))
        group, element = tag_text.split(",")
        tag = Tag(int(group, 16), int(element, 16))
        rows[int(tag)] = ProfileRow(
            int(tag), name, Action(basic), Action(option) if option else Action(basic)
        )
    return rows


#: PS3.15 Table E.1-1 rows: tag -> :class:`ProfileRow`
PROFILE: dict[int, ProfileRow] = _parse_table(_TABLE)


@dataclass(frozen=True)
class SafePrivate:
    """A private element kept for quantitation: group, private creator, element offset (0xYY)."""

    group: int
    creator: str
    offset: int
    description: str
    is_datetime: bool = False


#: private elements kept (Retain Safe Private Option) because SUV computation needs them
SAFE_PRIVATE: tuple[SafePrivate, ...] = (
    SafePrivate(0x7053, "Philips PET Private Group", 0x00, "SUV scale factor"),
    SafePrivate(0x7053, "Philips PET Private Group", 0x09, "activity concentration scale factor"),
    SafePrivate(0x0009, "GEMS_PETD_01", 0x0D, "scan DateTime (decay reference)", True),
)

_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113111", "Retain Safe Private Option"),
)
_DUMMY = {
    "PN": "ANONYMOUS",
    "LO": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "UC": "ANONYMOUS",
    "CS": "ANONYMOUS",
    "AE": "ANONYMOUS",
    "LT": "",
    "ST": "",
    "UT": "",
}
_MAX_SHIFT_DAYS = 3650
#: file meta elements kept; the others (AE titles, presentation addresses of the sending and
#: receiving systems, private information) can identify the institution and are removed
_FILE_META_KEPT = frozenset(
    {
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ImplementationVersionName",
    }
)


class Deidentifier:
    """Keyed, deterministic de-identification of datasets (see the module docstring).

    Parameters
    ----------
    key
        Secret for the HMACs. The same key gives the same pseudonyms, date shifts and UIDs in
        every run; keep it to add later visits of the same patients to an export. Never logged.

    Examples
    --------
    >>> d = Deidentifier("secret")
    >>> d.pseudonym("PAT-1") == Deidentifier("secret").pseudonym("PAT-1")
    True
    >>> d.map_uid("1.2.3") == d.map_uid("1.2.3"), d.map_uid("1.2.3").startswith("2.25.")
    (True, True)
    """

    def __init__(self, key: str | bytes) -> None:
        if not key:
            raise IsletImagingError("the de-identification key is empty", tag="key")
        self._key = key.encode() if isinstance(key, str) else bytes(key)

    def __repr__(self) -> str:
        return "Deidentifier(key=***)"

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """Pseudonymous patient ID (also used as patient name)."""
        code = base64.b32encode(self._digest("patient", patient_id)).decode()[:10]
        return f"ANON-{code}"

    def date_shift_days(self, patient_id: str) -> int:
        """Whole days added to every date of this patient (negative: between 1 and 10 years)."""
        n = int.from_bytes(self._digest("dates", patient_id)[:8], "big")
        return -(365 + n % (_MAX_SHIFT_DAYS - 365 + 1))

    def map_uid(self, uid: str) -> str:
        """Replacement UID (``2.25.<int>``), the same for the same input UID and key."""
        return "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))

    # ------------------------------------------------------------------ dataset
    def deidentify(self, ds: Dataset) -> Dataset:
        """Return a de-identified copy of ``ds`` (file meta included)."""
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise IsletImagingError(
                "image has burned-in annotation; pixel data are not cleaned",
                path=getattr(ds, "filename", None),
                tag="BurnedInAnnotation",
                value="YES",
                hint="exclude this series from the export",
            )
        patient_id = str(ds.get("PatientID", "") or "")
        shift = self.date_shift_days(patient_id)
        out = copy.deepcopy(ds)
        self._clean(out, shift)
        pseudo = self.pseudonym(patient_id)
        out.PatientID = pseudo
        out.PatientName = pseudo
        out.PatientIdentityRemoved = "YES"
        out.LongitudinalTemporalInformationModified = "MODIFIED"
        out.DeidentificationMethod = f"islet-imaging {__version__}: PS3.15 E.1-1 Basic Profile"
        codes = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        out.DeidentificationMethodCodeSequence = codes
        if hasattr(ds, "file_meta"):
            meta = copy.deepcopy(ds.file_meta)
            if "MediaStorageSOPInstanceUID" in meta:
                meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
            for elem in list(meta):  # AE titles, presentation addresses, private information
                if elem.keyword not in _FILE_META_KEPT:
                    del meta[elem.tag]
            out.file_meta = meta
        if getattr(ds, "preamble", None):  # free bytes (e.g. a TIFF header): not cleaned
            out.preamble = b"\0" * 128
        return out

    def _clean(self, ds: Dataset, shift: int) -> None:
        creators = _private_creators(ds)
        for elem in list(ds):
            tag = int(elem.tag)
            if elem.tag.is_private:
                self._private(ds, elem, creators, shift)
                continue
            group = elem.tag.group
            if (0x6000 <= group <= 0x60FF and group % 2 == 0 and elem.tag.element >= 0x3000) or (
                0x5000 <= group <= 0x50FF and group % 2 == 0
            ):
                del ds[elem.tag]  # overlay data / comments, curves
                continue
            row = PROFILE.get(tag)
            action = row.with_options if row else _default_action(elem)
            _apply(ds, elem, action, self, shift)
            if elem.tag in ds and elem.VR == "SQ" and action is not Action.REMOVE:
                for item in ds[elem.tag].value:
                    self._clean(item, shift)

    def _private(self, ds: Dataset, elem, creators: dict[int, str], shift: int) -> None:
        tag = elem.tag
        if tag.is_private_creator:
            keep = any(s.group == tag.group and s.creator == str(elem.value) for s in SAFE_PRIVATE)
            if not keep:
                del ds[tag]
            return
        block = (tag.group << 16) | (tag.element >> 8)
        creator = creators.get(block)
        for safe in SAFE_PRIVATE:
            if (
                safe.group == tag.group
                and creator == safe.creator
                and (tag.element & 0xFF) == safe.offset
            ):
                if safe.is_datetime and elem.value:
                    elem.value = _shift_dt(str(elem.value), shift)
                return
        del ds[tag]


def _private_creators(ds: Dataset) -> dict[int, str]:
    return {
        (e.tag.group << 16) | (e.tag.element & 0xFF): str(e.value)
        for e in ds
        if e.tag.is_private and e.tag.is_private_creator
    }


def _default_action(elem) -> Action:
    if elem.VR == "PN":
        return Action.REMOVE
    if elem.VR in ("DA", "DT"):
        return Action.SHIFT
    if elem.VR == "UI":
        return Action.UID
    return Action.KEEP


def _shift_da(value: str, days: int) -> str:
    """``value`` shifted by ``days``; a value that is not a valid date is emptied."""
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        shifted = parse_da(text[:8]) + dt.timedelta(days=days)
    except (ValueError, OverflowError):  # e.g. month 13: not a date, cannot be kept
        return ""
    return shifted.strftime("%Y%m%d")


def _shift_dt(value: str, days: int) -> str:
    text = value.strip()
    date = _shift_da(text[:8], days)
    return date + text[8:] if date else ""


def _map_values(value, func: Callable[[str], str]):
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [func(str(v)) for v in value]
    return func(str(value)) if value not in (None, "") else value


def _apply(ds: Dataset, elem, action: Action, deid: Deidentifier, shift: int) -> None:
    if action is Action.KEEP:
        return
    if action is Action.REMOVE:
        del ds[elem.tag]
    elif action is Action.EMPTY:
        elem.value = [] if elem.VR == "SQ" else None
    elif action is Action.SHIFT:
        if elem.VR == "DA":
            elem.value = _map_values(elem.value, lambda v: _shift_da(v, shift))
        elif elem.VR == "DT":
            elem.value = _map_values(elem.value, lambda v: _shift_dt(v, shift))
        # TM: whole-day shifts leave times unchanged
    elif action is Action.UID:
        if elem.VR == "UI":
            elem.value = _map_values(
                elem.value, lambda v: v if v in UID_dictionary else deid.map_uid(v)
            )
        # sequences (X/Z/U*): kept, their items are cleaned (UIDs remapped) by the caller
    elif action is Action.DUMMY:
        if elem.VR == "SQ":
            return  # items are cleaned by the caller
        if elem.VR in ("DA", "DT", "TM"):
            _apply(ds, elem, Action.SHIFT, deid, shift)
        elif elem.VR == "UI":
            _apply(ds, elem, Action.UID, deid, shift)
        else:
            elem.value = _DUMMY.get(elem.VR)


# --------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    """What :func:`export_deidentified` did."""

    written: list[Path] = field(default_factory=list)
    #: files that are not DICOM instances (ignored)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: DICOM files that could not be de-identified safely (not exported)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    patients: int = 0


def _iter_files(src: Path) -> Iterator[Path]:
    if src.is_file():
        yield src
        return
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def export_deidentified(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    key: str | bytes | None = None,
) -> ExportReport:
    """De-identify every DICOM file under ``src`` into ``out`` (inputs are never modified).

    Files are written atomically as ``out/<pseudonym>/<study UID>/<series UID>/<SOP UID>.dcm``
    (new UIDs); an existing file is never overwritten. Non-DICOM files are listed in
    ``report.skipped``; files refused (burned-in annotation, truncated or corrupt, or whose
    target already exists: a duplicate instance or an earlier export) in ``report.refused``,
    and the export goes on. A file cut exactly between two elements reads as a shorter valid
    object: it is refused if it is an image without pixel data, and skipped if the cut comes
    before its SOPInstanceUID.

    Parameters
    ----------
    src
        File or folder tree of DICOM files.
    out
        Output folder (created).
    key
        HMAC secret: with the same key, pseudonyms, date shifts and UIDs are the same across
        runs (export later visits with the same key). Default: a random key, so nothing links
        this export to another one.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise IsletImagingError("no such file or folder", path=src, tag="SRC")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise IsletImagingError(
            "the output folder must not be inside the input", path=out, tag="OUT"
        )
    deid = Deidentifier(key if key else secrets.token_bytes(32))
    report = ExportReport()
    patients = set()
    with closing(ZipReader()) as reader:
        for path in _iter_files(src):
            try:
                ds = pydicom.dcmread(path)
            except pydicom.errors.InvalidDicomError:
                report.skipped.append((path, "not DICOM: InvalidDicomError"))
                continue
            except OSError as exc:  # unreadable, or pydicom found no element where one is due
                if (cut := _cut(path, reader)) is not None:
                    report.refused.append((path, f"{_DAMAGED}: {cut}"))
                else:
                    report.skipped.append((path, f"not DICOM: {type(exc).__name__}"))
                continue
            except Exception:  # pydicom raises many types on damaged files; messages quote values
                report.refused.append((path, f"{_DAMAGED}: data elements unreadable"))
                continue
            damage = _damage(path, ds, reader)
            if damage is not None:
                report.refused.append((path, f"{_DAMAGED}: {damage}"))
                continue
            if "SOPInstanceUID" not in ds:
                report.skipped.append(
                    (path, "no SOPInstanceUID (DICOMDIR or not a stored instance)")
                )
                continue
            try:
                clean = deid.deidentify(ds)
            except IsletImagingError as exc:
                report.refused.append((path, exc.message))
                continue
            patients.add(clean.PatientID)
            target = (
                out
                / str(clean.PatientID)
                / str(clean.get("StudyInstanceUID", "nostudy"))
                / str(clean.get("SeriesInstanceUID", "noseries"))
                / f"{clean.SOPInstanceUID}.dcm"
            )
            try:
                write_object(clean, target)
            except IsletImagingError:  # a duplicate instance in ``src``, or an earlier export
                report.refused.append((path, f"not overwriting the exported file {target}"))
                continue
            report.written.append(target)
    report.patients = len(patients)
    return report


_DAMAGED = "truncated or corrupt DICOM"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: storage classes that are not named "... Image Storage" but hold pixel data
_PIXEL_CLASSES = frozenset({"Segmentation Storage", "Parametric Map Storage"})


def _bad_element(ds: Dataset) -> str | None:
    """Why an element of ``ds`` (also inside sequences) is cut or cannot be decoded, or None."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.value is not None
            and raw.length != 0xFFFFFFFF  # undefined length
            and len(raw.value) < raw.length
        ):
            return f"element {tag} has {len(raw.value)} of its {raw.length} bytes"
        try:
            elem = ds[tag]
        except Exception:  # pydicom decodes lazily and raises many types
            return f"element {tag} cannot be decoded"
        if elem.VR == "SQ":
            for item in elem.value:
                if (bad := _bad_element(item)) is not None:
                    return bad
    return None


def _cut(path: Path, reader: ZipReader) -> str | None:
    """Where the file is cut, if the fast walker finds it ends inside an element or the pixels."""
    try:
        read_dicom_file(str(path), reader, headers_only=True)
    except NotDicomError as exc:
        return str(exc) if str(exc).startswith("truncated file") else None
    return None


def _damage(path: Path, ds: Dataset, reader: ZipReader) -> str | None:
    """Why the file read as ``ds`` is cut or corrupt (naming tags, never quoting values), or None.

    pydicom reads a cut file leniently and decodes values lazily: the elements after the cut
    are missing and the last one may be short. Cuts inside an element or inside the pixel data
    are found by :func:`_cut` and by the element lengths; a cut between two elements shows as
    an image without pixel data.
    """
    cut = _cut(path, reader)
    if cut is not None:
        return f"{cut}; last element read {list(ds.keys())[-1]}" if len(ds) else cut
    bad = _bad_element(ds)
    if bad is not None:
        return bad
    if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed:
        try:
            expected = get_expected_length(ds, "bytes")
        except (AttributeError, KeyError, TypeError, ValueError):
            return "PixelData (7FE0,0010) without the image attributes that size it"
        if len(ds.PixelData) < expected:
            return f"PixelData (7FE0,0010) has {len(ds.PixelData)} bytes, {expected} needed"
    name = UID_dictionary.get(ds.get("SOPClassUID"), ("",))[0]
    if ("Image Storage" in name or name in _PIXEL_CLASSES) and not any(
        k in ds for k in _PIXEL_KEYWORDS
    ):
        return f"no PixelData (7FE0,0010) in an instance of {name}"
    return None
